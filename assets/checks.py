"""Asset checks: the lecture's claims on the assets that measure them, and guards on data.

One check per claim of `conv_core.claims.REGISTRY`, generated: it passes or
fails with the lecture's value, the measured value and the tolerance in its
metadata, so a failure in the UI says by how much.
The data guards are blocking: a broken MNIST stops everything downstream.
(Guards on each trained model run inside `trained_model` itself, since
checks there must see the partition being materialised.)
"""

import inspect

import dagster as dg
import torch

from conv_core import claims

# Share of each class allowed in a split: MNIST's rarest digit (5) is 9.0% of
# the test set and its commonest (1) 11.4%.
CLASS_SHARE_RANGE = (0.05, 0.15)


def claim_result(claim: claims.Claim, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=claim.passed, severity=severity, description=claim.statement,
                               metadata={"lecture_value": claim.lecture_value, "measured_value": claim.measured_value,
                                         "tolerance": claim.tolerance, "slide": claim.slide})


# --------------------------------------------------------------------------- data guards (blocking)


def data_problems(mnist: dict) -> dict[str, str]:
    """Everything wrong with an `mnist` value, by check name (empty when it is sound)."""
    problems = {}
    for split in ("train", "test"):
        images, labels = mnist[f"{split}_images"], mnist[f"{split}_labels"]
        if len(images) == 0 or len(images) != len(labels):
            problems[f"{split}_counts"] = f"{len(images)} images, {len(labels)} labels"
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (28, 28) or int(images.max()) == 0:
            problems[f"{split}_pixels"] = f"{images.dtype} {tuple(images.shape)}, max {int(images.max())}"
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
            problems[f"{split}_labels"] = f"labels span {int(labels.min())}..{int(labels.max())}"
        shares = torch.bincount(labels.clamp(0, 9), minlength=10).float() / max(1, len(labels))
        low, high = CLASS_SHARE_RANGE
        if len(labels) and (float(shares.min()) < low or float(shares.max()) > high):
            problems[f"{split}_balance"] = f"class shares {float(shares.min()):.3f}..{float(shares.max()):.3f}"
    return problems


@dg.asset_check(asset="mnist", blocking=True,
                description="Counts agree, labels are 0-9, pixels are uint8 28x28, every class is 5-15% of each split.")
def mnist_is_sound(mnist: dict) -> dg.AssetCheckResult:
    problems = data_problems(mnist)
    shares = torch.bincount(mnist["train_labels"].clamp(0, 9), minlength=10).float() / max(1, len(mnist["train_labels"]))
    return dg.AssetCheckResult(passed=not problems, metadata={
        "problems": dg.MetadataValue.json(problems),
        "train_size": len(mnist["train_labels"]), "test_size": len(mnist["test_labels"]),
        "train_class_share_min": float(shares.min()), "train_class_share_max": float(shares.max()),
        "train_pixel_max": int(mnist["train_images"].max()),
    })


# --------------------------------------------------------------------------- the lecture's claims


def claim_check(spec: claims.ClaimSpec) -> dg.AssetChecksDefinition:
    """The asset check of one registered claim: reads the asset it hangs on and any other inputs it names."""
    def check(**values) -> dg.AssetCheckResult:
        return claim_result(spec(values))

    # Dagster reads a check's inputs from its parameters: name them after the assets the claim reads.
    check.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in spec.inputs])
    others = {name: dg.AssetIn(name) for name in spec.inputs if name != spec.asset}
    return dg.asset_check(asset=spec.asset, name=spec.key, description=spec.description,
                          additional_ins=others)(check)


CLAIM_CHECKS = [claim_check(spec) for spec in claims.REGISTRY]
