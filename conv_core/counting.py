"""The lecture's arithmetic: weights and signal sizes per layer, from the specs.

Counts come from the layer specs in `conv_core.models`, not from summing
`numel` over a torch module; a test cross-checks the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from conv_core.models import Conv, Dropout, Linear, Pool, architecture


@dataclass(frozen=True)
class LayerCount:
    layer: str            # stage name, as in the built model ("conv1", "fc2", ...)
    kind: str             # "conv" or "linear"
    weights: int          # without biases, as the lecture counts them
    biases: int
    input_signal: int     # size of the signal the layer reads
    output_signal: int    # size of the signal it writes (before pooling)
    output_shape: tuple[int, ...]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelCount:
    model: str
    layers: list[LayerCount]

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def biases(self) -> int:
        return sum(layer.biases for layer in self.layers)

    @property
    def parameters(self) -> int:
        return self.weights + self.biases

    @property
    def signals(self) -> list[int]:
        """The lecture's "sizes of signals h": the input, then every hidden layer's output.

        The logits are not a hidden signal, so the last layer's output is left out.
        """
        return [self.layers[0].input_signal] + [layer.output_signal for layer in self.layers[:-1]]


def count_parameters(name: str, **overrides) -> ModelCount:
    """Weights, biases and signal sizes per weight layer of a named model."""
    spec = architecture(name, **overrides)
    channels, size = spec["in_channels"], spec["input_size"]
    flat: int | None = None
    convs = fcs = 0
    rows: list[LayerCount] = []
    for layer in spec["layers"]:
        if isinstance(layer, Conv):
            convs += 1
            out_size = size + 2 * layer.padding - layer.kernel + 1
            shape = (layer.out_channels, out_size, out_size)
            rows.append(LayerCount(
                f"conv{convs}", "conv",
                weights=layer.kernel * layer.kernel * channels * layer.out_channels,
                biases=layer.out_channels,
                input_signal=channels * size * size,
                output_signal=layer.out_channels * out_size * out_size,
                output_shape=shape,
            ))
            channels, size = layer.out_channels, out_size
        elif isinstance(layer, Pool):
            size //= layer.size
        elif isinstance(layer, Linear):
            fcs += 1
            inputs = channels * size * size if flat is None else flat
            rows.append(LayerCount(
                f"fc{fcs}", "linear",
                weights=inputs * layer.out_features,
                biases=layer.out_features,
                input_signal=inputs,
                output_signal=layer.out_features,
                output_shape=(layer.out_features,),
            ))
            flat = layer.out_features
        elif not isinstance(layer, Dropout):
            raise TypeError(f"unknown layer spec {layer!r}")
    return ModelCount(name, rows)


@dataclass(frozen=True)
class Connectivity:
    dense: int    # every input connected to every output
    local: int    # only |x1 - x2| <= radius (in every dimension) kept
    shared: int   # local weights indexed by the offset only: a convolution

    def as_dict(self) -> dict:
        return asdict(self)


def connectivity_counts(inputs: int, outputs: int, radius: int, in_channels: int = 1,
                        out_channels: int = 1, dims: int = 1) -> Connectivity:
    """Weights of a dense, a locally connected and a weight-shared layer.

    `inputs` and `outputs` are positions per dimension (5 and 5 in the lecture's
    1-D example); output position x2 sees input x1 when |x1 - x2| <= radius, with
    positions aligned at 0 (zero padding keeps the size). 1-D or 2-D.
    """
    for field, value in (("inputs", inputs), ("outputs", outputs), ("in_channels", in_channels),
                         ("out_channels", out_channels)):
        if value <= 0:
            raise ValueError(f"{field} must be positive, got {value}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims}")
    pairs_1d = sum(1 for x1 in range(inputs) for x2 in range(outputs) if abs(x1 - x2) <= radius)
    channel_pairs = in_channels * out_channels
    return Connectivity(
        dense=(inputs * outputs) ** dims * channel_pairs,
        local=pairs_1d ** dims * channel_pairs,
        shared=(2 * radius + 1) ** dims * channel_pairs,
    )
