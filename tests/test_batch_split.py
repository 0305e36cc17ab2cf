"""A training step's batch cut across threads (conv_core.batch_split): the one-thread step's loss, logits and
gradients within float rounding, the same bits for the same thread count, and train() using it."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from conv_core.batch_split import SWITCH_VARIABLE, BatchSplitStep, split_applies
from conv_core.models import build_model, pool_before_relu
from conv_core.train import TrainConfig, train


def _loss_sum(logits, y):
    return F.cross_entropy(logits, y, label_smoothing=0.1, reduction="sum")


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _seed_cnn_and_batch(count=50):
    torch.manual_seed(0)
    model = build_model("seed_cnn").to(memory_format=torch.channels_last)
    x = torch.rand(count, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (count,), generator=torch.Generator().manual_seed(2))
    return model, x.contiguous(memory_format=torch.channels_last), y


@pytest.mark.parametrize("threads", [2, 3])
def test_the_split_step_computes_the_whole_batchs_loss_and_gradient(threads, one_torch_thread):
    model, x, y = _seed_cnn_and_batch(50)  # 50 in 3 slices: 17, 17, 16
    forward = pool_before_relu(model)
    logits = forward(x)
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    with BatchSplitStep(forward, model.parameters(), threads, loss_sum=_loss_sum) as step:
        split_loss, split_logits = step(x, y)
    torch.testing.assert_close(split_loss, loss.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(split_logits, logits.detach(), rtol=1e-5, atol=1e-5)
    for parameter, gradient in zip(model.parameters(), expected):
        torch.testing.assert_close(parameter.grad, gradient, rtol=1e-4, atol=1e-6)


def test_the_same_thread_count_gives_the_same_bits(one_torch_thread):
    model, x, y = _seed_cnn_and_batch(64)
    forward = pool_before_relu(model)
    gradients = []
    with BatchSplitStep(forward, model.parameters(), 2, loss_sum=_loss_sum) as step:
        for _ in range(3):
            step(x, y)
            gradients.append([p.grad.clone() for p in model.parameters()])
    for later in gradients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(gradients[0], later))


def test_a_batch_smaller_than_the_thread_count_still_steps(one_torch_thread):
    model, x, y = _seed_cnn_and_batch(1)
    with BatchSplitStep(pool_before_relu(model), model.parameters(), 2, loss_sum=_loss_sum) as step:
        loss, logits = step(x, y)
    assert logits.shape == (1, 10) and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_a_failing_slice_raises_and_leaves_no_slice_running(one_torch_thread):
    model, x, y = _seed_cnn_and_batch(8)
    running, finished = threading.Event(), threading.Event()

    def forward(batch):
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("the first slice fails")
        running.set()
        finished.wait(timeout=0.2)  # still computing when the first slice fails
        finished.set()
        return model(batch)

    with BatchSplitStep(forward, model.parameters(), 2, loss_sum=_loss_sum) as step:
        with pytest.raises(RuntimeError, match="the first slice fails"):
            step(x, y)
        assert running.is_set() and finished.is_set()  # the other slice was waited for


def test_models_that_draw_random_numbers_keep_torchs_threads(monkeypatch):
    cpu = torch.device("cpu")
    assert split_applies(build_model("seed_cnn"), cpu, 2)
    assert not split_applies(build_model("caffe_notebook"), cpu, 2)  # input dropout
    assert not split_applies(build_model("seed_cnn"), cpu, 1)
    assert not split_applies(build_model("seed_cnn"), torch.device("meta"), 2)
    monkeypatch.setenv(SWITCH_VARIABLE, "0")
    assert not split_applies(build_model("seed_cnn"), cpu, 2)


def test_train_with_two_threads_splits_its_batches_and_repeats_its_bits():
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(model="seed_cnn", device="cpu", epochs=2, batch_size=64, channels_last=True, bf16=False)
    threads_before = torch.get_num_threads()
    lines = []
    first = train(config, images, labels, threads=2, log=lines.append)
    second = train(config, images, labels, threads=2, log=lambda line: None)
    one_thread = train(config, images, labels, threads=1, log=lambda line: None)
    assert "2 threads, batch split" in lines[0]
    assert torch.get_num_threads() == threads_before
    for name, weight in first.model.state_dict().items():
        assert torch.equal(weight, second.model.state_dict()[name]), name
        torch.testing.assert_close(weight, one_thread.model.state_dict()[name], rtol=1e-3, atol=1e-4)
    assert first.history[-1].train_loss == pytest.approx(one_thread.history[-1].train_loss, rel=1e-4)
