"""Asset checks: the lecture's claims on the assets that measure them, and guards on data.

Every check runs inside the step of the asset it checks (`check_specs` on the
asset), so a materialisation from the UI costs what its work costs: no extra
step reloads the value. An asset declares `claim_specs("<its name>")` and,
after its Output, yields `claim_results("<its name>", value)`: one check per
claim of `conv_core.claims.REGISTRY` that hangs on it, passing or failing with
the lecture's value, the measured value (also as a number, so the UI plots it)
and the tolerance in its metadata.
The data guards are blocking: a broken MNIST stops everything downstream.
"""

import dagster as dg
import torch

from conv_core import claims

# Share of each class allowed in a split: MNIST's rarest digit (5) is 9.0% of
# the test set and its commonest (1) 11.4%.
CLASS_SHARE_RANGE = (0.05, 0.15)


def claim_result(claim: claims.Claim, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    numbers = {name: value for name, value in (("measured", claim.measured_number), ("lecture", claim.lecture_number))
               if value is not None}
    return dg.AssetCheckResult(check_name=claim.key, passed=claim.passed, severity=severity,
                               description=claim.statement, metadata={
                                   **numbers, "lecture_value": claim.lecture_value,
                                   "measured_value": claim.measured_value, "tolerance": claim.tolerance,
                                   "slide": claim.slide})


def _registered(asset: str) -> list[claims.ClaimSpec]:
    return [spec for spec in claims.REGISTRY if spec.asset == asset]


def claim_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """The check specs of the claims that hang on `asset`, for `@dg.asset(check_specs=...)`."""
    return [dg.AssetCheckSpec(spec.key, asset=asset, description=spec.description) for spec in _registered(asset)]


def claim_results(asset: str, value: dict) -> list[dg.AssetCheckResult]:
    """Those claims decided on the asset's freshly computed value."""
    return [claim_result(spec({asset: value})) for spec in _registered(asset)]


# --------------------------------------------------------------------------- data guards (blocking)

MNIST_IS_SOUND = dg.AssetCheckSpec(
    "mnist_is_sound", asset="mnist", blocking=True,
    description="Counts agree, labels are 0-9, pixels are uint8 28x28, every class is 5-15% of each split.")


def data_problems(mnist: dict) -> dict[str, str]:
    """Everything wrong with an `mnist` value, by check name (empty when it is sound)."""
    problems = {}
    for split in ("train", "validation", "test"):
        if f"{split}_images" not in mnist:
            problems[f"{split}_missing"] = f"no {split} split"
            continue
        images, labels = mnist[f"{split}_images"], mnist[f"{split}_labels"]
        if len(images) == 0 or len(images) != len(labels):
            problems[f"{split}_counts"] = f"{len(images)} images, {len(labels)} labels"
            continue
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (28, 28) or int(images.max()) == 0:
            problems[f"{split}_pixels"] = f"{images.dtype} {tuple(images.shape)}, max {int(images.max())}"
        if int(labels.min()) < 0 or int(labels.max()) > 9:
            problems[f"{split}_labels"] = f"labels span {int(labels.min())}..{int(labels.max())}"
        shares = torch.bincount(labels.clamp(0, 9), minlength=10).float() / len(labels)
        low, high = CLASS_SHARE_RANGE
        if float(shares.min()) < low or float(shares.max()) > high:
            problems[f"{split}_balance"] = f"class shares {float(shares.min()):.3f}..{float(shares.max()):.3f}"
    return problems


def mnist_soundness(mnist: dict) -> dg.AssetCheckResult:
    problems = data_problems(mnist)
    shares = torch.bincount(mnist["train_labels"].clamp(0, 9), minlength=10).float() / max(1, len(mnist["train_labels"]))
    return dg.AssetCheckResult(check_name=MNIST_IS_SOUND.name, passed=not problems, metadata={
        "problems": dg.MetadataValue.json(problems),
        "train_size": len(mnist["train_labels"]), "test_size": len(mnist["test_labels"]),
        "train_class_share_min": float(shares.min()), "train_class_share_max": float(shares.max()),
        "train_pixel_max": int(mnist["train_images"].max()),
    })
