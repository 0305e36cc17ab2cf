"""What one network does with one digit, computed by conv_core.

The signals are the lecture's: every representation layer from pixels to
logits (conv_core.representations names them: conv1 is relu1's output, the
lecture's h^(1)), a unit's projections back to the input (conv_core.gradients,
through captum), and distances to the test digits in pixel space and in a
layer's feature space ("in pixel space 9-4 is closer; in feature space 4-4 is").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conv_core.evaluate import layer_activations
from conv_core.gradients import one_thread, receptive_field, unit_projections
from conv_core.models import LayerNet
from conv_core.representations import representation_layers
from explorer.digits import Digits

PIXELS = "pixels"


class BadUnitError(ValueError):
    """A layer or unit the network does not have; the message lists what it has."""


@dataclass(frozen=True)
class Layer:
    name: str  # as the lecture says it: conv1, pool1, conv2, pool2, logits (fc1, fc2 in an MLP)
    stage: str  # the LayerNet module whose output it is
    shape: tuple[int, ...]  # one image's signal: (C, H, W) for feature maps, (D,) for a vector

    @property
    def label(self) -> str:
        """The lecture's way of writing the size: 28x28x9 (height x width x channels), or 10."""
        if len(self.shape) == 3:
            channels, height, width = self.shape
            return f"{height}x{width}x{channels}"
        return "x".join(str(n) for n in self.shape)

    def flat_index(self, unit) -> int:
        """The unit's position in the flattened signal; BadUnitError when out of range."""
        unit = tuple(int(i) for i in unit)
        if len(unit) != len(self.shape) or any(not 0 <= i < n for i, n in zip(unit, self.shape)):
            axes = "(channel, y, x)" if len(self.shape) == 3 else "(index,)"
            raise BadUnitError(f"{self.name} has units {axes} below {self.shape}, not {unit}")
        index = 0
        for i, n in zip(unit, self.shape):
            index = index * n + i
        return index


def layers_of(network: LayerNet) -> list[Layer]:
    """The representation layers after the pixels, input to logits, with their shapes."""
    stages = {name: stage for name, stage in representation_layers(network).items() if name != PIXELS}
    size = network.input_size
    shapes = layer_activations(network, torch.zeros(1, size, size), list(stages.values()))
    return [Layer(name, stage, tuple(shapes[stage].shape[1:])) for name, stage in stages.items()]


class Inspector:
    """One network and the test digits its units and neighbours are looked up in."""

    def __init__(self, network: LayerNet, pool: Digits):
        self.network = network.eval()
        self.pool = pool
        self.layers = layers_of(network)
        # Per layer: the pool's flattened features and their squared norms, computed on first use.
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        known = ", ".join(layer.name for layer in self.layers)
        raise BadUnitError(f"the model has no layer {name!r}; its layers are {known}")

    @property
    def neighbour_layers(self) -> list[str]:
        return [PIXELS] + [layer.name for layer in self.layers]

    def default_neighbour_layer(self) -> str:
        """The last layer before the logits, the most abstract representation short of the answer."""
        return self.layers[-2].name if len(self.layers) > 1 else self.layers[-1].name

    # ------------------------------------------------------------------ one digit forward

    @one_thread()
    def think(self, image: torch.Tensor) -> dict:
        """Every layer's signal on one 28x28 image in [0, 1], and the class probabilities."""
        stages = [layer.stage for layer in self.layers]
        signals = layer_activations(self.network, image[None], stages)
        logits = signals[self.layers[-1].stage][0]
        return {"pixels": signals["input"][0, 0],
                "layers": {layer.name: signals[layer.stage][0] for layer in self.layers},
                "logits": logits,
                "probabilities": torch.softmax(logits, dim=0)}

    # ------------------------------------------------------------------ neighbours among the test digits

    @one_thread()
    def pool_features(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The searched test digits' flattened signals in layer `name` (or pixels), and their squared norms.

        Every layer's come from one pass over the digits, made on first use: a pass per layer
        costs nearly as much as one for all of them.
        """
        if name != PIXELS:
            self.layer(name)  # a clear error for an unknown layer
        if not self._features:
            stages = {layer.name: layer.stage for layer in self.layers}
            signals = layer_activations(self.network, self.pool.images, list(stages.values()), batch_size=500)
            for layer_name, stage in {PIXELS: "input", **stages}.items():
                features = signals[stage].flatten(1)
                self._features[layer_name] = (features, (features * features).sum(dim=1))
        return self._features[name]

    def neighbours(self, signals: dict, name: str, k: int = 8) -> list[dict]:
        """The k test digits nearest the image in layer `name`'s space (Euclidean), nearest first."""
        features, norms = self.pool_features(name)  # first: it names an unknown layer clearly
        query = (signals["pixels"] if name == PIXELS else signals["layers"][name]).flatten()
        # |p - q|^2 = |p|^2 - 2 p.q + |q|^2: one matrix-vector product ranks the whole pool; the
        # k winners' distances are then measured directly (the expansion cancels badly near zero).
        squared = norms - 2 * features @ query + query @ query
        indices = squared.topk(min(k, len(squared)), largest=False).indices
        distances = (features[indices] - query).norm(dim=1)
        return [{"index": int(i), "label": int(self.pool.labels[i]), "distance": float(d)}
                for i, d in zip(indices.tolist(), distances.tolist())]

    # ------------------------------------------------------------------ one unit

    def unit_maps(self, image: torch.Tensor, name: str, unit) -> dict[str, torch.Tensor]:
        """The unit's gradient, deconvnet and guided-backprop maps on the image (normalised input space)."""
        layer = self.layer(name)
        layer.flat_index(unit)
        return unit_projections(self.network, image, layer.stage, tuple(int(i) for i in unit))

    def receptive_field(self, name: str, unit) -> tuple[int, int, int, int] | None:
        """(top, left, bottom, right) of the input a feature-map unit reads; None for a vector unit."""
        layer = self.layer(name)
        if len(layer.shape) != 3:
            return None
        _, y, x = (int(i) for i in unit)
        return receptive_field(self.network, layer.stage, y, x)

    def top_activating(self, name: str, unit, k: int = 9) -> list[dict]:
        """The k test digits on which this very unit is largest, largest first."""
        column = self.layer(name).flat_index(unit)
        features, _ = self.pool_features(name)
        values, indices = features[:, column].topk(min(k, len(features)))
        return [{"index": int(i), "label": int(self.pool.labels[i]), "value": float(v)}
                for i, v in zip(indices.tolist(), values.tolist())]
