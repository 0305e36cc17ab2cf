import pytest
import torch
from torch import nn

from conv_core.counting import connectivity_counts, count_parameters
from conv_core.first_layer import ConvPoolReLU
from conv_core.models import MODEL_NAMES, Conv, Linear, build_model, pool_before_relu


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_images_to_ten_logits(name):
    model = build_model(name).eval()
    size = model.input_size
    logits = model(torch.rand(3, 1, size, size))
    assert logits.shape == (3, 10)


def test_seed_cnn_is_the_lecture_network():
    model = build_model("seed_cnn")
    stages = [n for n, _ in model.named_children()]
    assert stages == ["normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1"]
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size, model.conv1.padding) == (1, 9, (5, 5), (2, 2))
    assert (model.conv2.in_channels, model.conv2.out_channels, model.conv2.kernel_size, model.conv2.padding) == (9, 16, (5, 5), (2, 2))
    assert (model.fc1.in_features, model.fc1.out_features) == (7 * 7 * 16, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_relu_is_its_own_module(name):
    relus = [m for m in build_model(name).modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) > 0


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_model("lenet9000")
    for name in MODEL_NAMES:
        assert name in str(err.value)


def test_overrides_change_the_built_layers():
    model = build_model("seed_cnn", layers=[Conv(4, 3, padding=1), Linear(10)])
    assert model.conv1.out_channels == 4 and model.fc1.in_features == 4 * 28 * 28
    with pytest.raises(ValueError, match="override"):
        build_model("seed_cnn", channels=3)


def test_normalisation_lives_in_the_model():
    model = build_model("mlp")
    x = torch.full((1, 1, 28, 28), 0.1307)
    assert torch.allclose(model.normalize(x), torch.zeros_like(x), atol=1e-6)
    assert "normalize" not in dict(model.body().named_children())


def test_lecture_counts_for_the_seed_cnn():
    count = count_parameters("seed_cnn")
    assert [layer.weights for layer in count.layers] == [225, 3600, 7840]
    assert count.weights == 11665
    assert count.signals == [784, 7056, 3136]


def test_lecture_counts_for_the_mlp():
    count = count_parameters("mlp")
    assert [layer.weights for layer in count.layers] == [176400, 32400, 1440]
    assert count.weights == 210240
    assert count.signals == [784, 225, 144]


def test_caffe_notebook_variant_has_5760_weights_in_its_last_layer():
    count = count_parameters("caffe_notebook")
    assert count.layers[-1].input_signal == 576
    assert count.layers[-1].weights == 5760


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_counts_match_the_torch_module(name):
    model = build_model(name)
    count = count_parameters(name)
    weight_layers = [(n, m) for n, m in model.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [n for n, _ in weight_layers] == [layer.layer for layer in count.layers]
    for (_, module), layer in zip(weight_layers, count.layers):
        assert module.weight.numel() == layer.weights
        assert module.bias.numel() == layer.biases
    assert count.parameters == sum(p.numel() for p in model.parameters())
    # Output signal sizes agree with a real forward pass.
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, o.shape[1:]))
             for n, m in weight_layers]
    model.eval()(torch.rand(2, 1, model.input_size, model.input_size))
    for hook in hooks:
        hook.remove()
    for layer in count.layers:
        assert tuple(shapes[layer.layer]) == layer.output_shape


def test_lecture_one_dimensional_connectivity_example():
    counts = connectivity_counts(inputs=5, outputs=5, radius=1)
    assert (counts.dense, counts.local, counts.shared) == (25, 13, 3)


def test_connectivity_of_the_seed_cnn_first_layer():
    counts = connectivity_counts(inputs=28, outputs=28, radius=2, in_channels=1, out_channels=9, dims=2)
    # Per dimension: 28 pairs at offset 0, 27 at each of +-1, 26 at each of +-2.
    assert counts.local == (28 + 2 * 27 + 2 * 26) ** 2 * 9
    assert counts.dense == 784 * 784 * 9
    assert counts.shared == 225 == count_parameters("seed_cnn").layers[0].weights


@pytest.mark.parametrize("field,kwargs", [("inputs", dict(inputs=0)), ("radius", dict(radius=-1)),
                                          ("dims", dict(dims=3))])
def test_connectivity_rejects_bad_arguments(field, kwargs):
    args = dict(inputs=5, outputs=5, radius=1) | kwargs
    with pytest.raises(ValueError, match=field):
        connectivity_counts(**args)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pool_before_relu_is_the_same_function_with_the_same_gradients(name, monkeypatch):
    monkeypatch.setenv("CONVLAB_FUSED_FIRST_LAYER", "0")  # float32 arithmetic of its own: test_first_layer.py
    torch.manual_seed(0)
    model = build_model(name).train()
    view = pool_before_relu(model)
    order = [n for n, _ in model.named_children()]
    # the same stages, moved, but for each ReLU before a pool (the pool takes it into its own pass) and
    # a first layer's pool (the one-channel convolution takes it)
    taken = set(dict(model.named_children())) - set(dict(view.named_children()))
    assert taken <= {n for n, m in model.named_children() if isinstance(m, (torch.nn.ReLU, torch.nn.MaxPool2d))}
    assert set(dict(view.named_children())) <= set(dict(model.named_children()))
    assert all(a is b for a, b in zip(sorted(model.parameters(), key=id), sorted(view.parameters(), key=id)))
    if name == "seed_cnn":
        assert [n for n, _ in view.named_children()][1:5] == ["conv1", "conv2", "pool2", "flatten"]
        assert taken == {"relu1", "pool1", "relu2"} and isinstance(view.conv1, ConvPoolReLU) and view.pool2.relu
    # blank areas make windows of tied maxima, negative ones windows that ReLU zeroes entirely
    x = torch.rand(6, 1, model.input_size, model.input_size)
    x[:3, :, :10] = 0
    grads = []
    for net in (model, view):
        torch.manual_seed(1)  # the same dropout mask for the Caffe variant
        model.zero_grad()
        out = net(x)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = grads
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert [n for n, _ in model.named_children()] == order  # the model keeps the lecture's order
