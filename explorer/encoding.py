"""Arrays in and out of JSON as base64 bytes: exact, compact, and quick to decode in the browser.

A float signal is {"shape": [...], "data": base64 of little-endian float32},
which JavaScript reads with one `new Float32Array(bytes.buffer)`; a grey image
is base64 of its uint8 pixels, row by row. Decoding checks sizes, so a bad
payload is a clear message, not a reshape error.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
import torch

# The pad sends its own pixels; anything from a thumbnail to a large canvas is fine.
MIN_SIDE, MAX_SIDE = 8, 1024


class BadPayloadError(ValueError):
    """A request whose content cannot be read; the message says what was expected."""


def floats(tensor: torch.Tensor) -> dict:
    array = np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype="<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def grey(image: torch.Tensor) -> str:
    """uint8 pixels as they are; floats in [0, 1] scaled to 0..255."""
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return base64.b64encode(image.cpu().contiguous().numpy().tobytes()).decode("ascii")


def read_floats(payload: dict) -> np.ndarray:
    """The inverse of `floats` (tests and the benchmark read responses with it)."""
    return np.frombuffer(base64.b64decode(payload["data"]), dtype="<f4").reshape(payload["shape"])


def read_grey(payload, expected_pixels: int | None = None) -> np.ndarray:
    if not isinstance(payload, str):
        raise BadPayloadError("pixels must be a base64 string of uint8 grey values, row by row")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadPayloadError(f"pixels are not valid base64 ({error})") from None
    if expected_pixels is not None and len(data) != expected_pixels:
        raise BadPayloadError(f"expected {expected_pixels} pixels (width x height), got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8)


def drawing(payload) -> torch.Tensor:
    """A pad's {"width", "height", "pixels"} as a uint8 (height, width) tensor."""
    if not isinstance(payload, dict):
        raise BadPayloadError('a drawing is {"width": W, "height": H, "pixels": base64 of W*H grey bytes}')
    width, height = payload.get("width"), payload.get("height")
    if not all(isinstance(n, int) and MIN_SIDE <= n <= MAX_SIDE for n in (width, height)):
        raise BadPayloadError(f"a drawing's width and height are whole numbers from {MIN_SIDE} to {MAX_SIDE}, "
                              f"got {width!r} and {height!r}")
    pixels = read_grey(payload.get("pixels"), width * height)
    return torch.from_numpy(pixels.copy()).reshape(height, width)
