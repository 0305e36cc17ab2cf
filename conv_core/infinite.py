"""Infinite MNIST: an endless, index-addressable stream of deformed digits.

After Loosli, Canu and Bottou's infimnist. Index i names one image forever:

    0 .. T-1         the test digits, untouched
    T .. T+N-1       the training digits, untouched
    i >= T+N         a deformation of training digit (i - T) mod N

(T = 10,000 and N = 60,000 for full MNIST: 70,000 onwards are deformations.)
Everything random about image i is a function of (i, seed), so the same index
gives the same bytes on every run, machine and device, and a training epoch
is just a fresh range of indices.

Two deformation modes, both computed for a whole batch at once:

- "infimnist": infimnist's index scheme with our own fields. First-order
  elastic deformation along the digit's tangent vectors, with infimnist's
  per-index arithmetic exactly:
      k1 = ((uint32(i) * 131071) mod 2^32) mod 1521,  k2 = (k1 + 1 + 2i) mod 1522,
      a  = +1, negated when k1 + k2 is odd,
      x' = x + a * (F[k1] * T0 - F[k2] * T1),
  then 0 where x' < 0, 255 where x' > 255, else x' truncated toward zero (no
  rounding), then infimnist's translation number k1 mod 9 (see `translate`).
  The product i * 131071 wraps around in 32 bits on purpose, as in infimnist
  (which keeps it so to stay compatible with the published mnist8m): it
  matters from i = 32769 on. 1522 is even, so k2 and k1 always differ in
  parity and a is always -1; the formula is kept as infimnist writes it.
  Our own are the fields and tangent vectors: F is a bank of 1522 smooth
  random displacement fields (Gaussian-blurred uniform noise), T0, T1 the
  digit's x and y derivatives (Sobel: a [1,2,1] smoothing across a central
  difference). infimnist's come from its 350 MB data files, which are not
  available here, so index i names the same field numbers, sign and
  translation as in infimnist, not the same image bytes.
- "elastic": Simard et al.'s elastic distortion: per image a displacement
  field of uniform(-1, 1) noise blurred by a Gaussian (sigma 4) times alpha
  (34) pixels, applied by bilinear resampling with zero fill. Blurring is
  linear, so instead of blurring fresh noise per image we blur a bank of 1024
  noise fields once and give image i the combination
      (1 / sqrt(4)) * sum_j s_j * blurred[m_j],   j = 1..4,
  with bank rows m_j and signs s_j hashed from (i, seed). That has exactly
  the covariance of Simard's field (and is as near Gaussian as his is); the
  only difference is that two images may share a bank row.

On CPU the "infimnist" mode runs as one C loop (conv_core/kernels/infimnist.c,
compiled on first use, see conv_core.native) that deforms, truncates and
translates each digit in a single pass while it sits in the L1 cache: a
dozen whole-array tensor passes become one (2-4x the digits per second
here), with the same exact arithmetic and so the same bytes (tested).
Without a C compiler the tensor operations below do the work, with a warning.

Exactness: every float computation works on numbers with few enough
significant bits that it is exact in float32 (fields are stored in fixed
point: 1/256 px in "infimnist", 1/128 px in "elastic"), so summation order,
FMA and vector width cannot change a result, and the output should be bitwise
the same on any CPU or GPU (the tests check it against float64 re-computations
of the formulas). The banks are blurred in float64 before that rounding to
fixed point. Bytes are read out by adding 2^23 and keeping the low byte, which
is also much faster than a float -> uint8 cast: after a floor in "infimnist"
(truncation, as the values are >= 0 by then), round half to even in "elastic".
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from conv_core import native

Mode = Literal["infimnist", "elastic"]
MODES: tuple[str, ...] = get_args(Mode)
IMAGE_SIZE = 28
GENERATOR_VERSION = 2  # bump when any output byte changes

# infimnist's index arithmetic
FIELD_COUNT = 1522
K1_MODULUS = 1521
K1_MULTIPLIER = 131071
MASK32 = 0xFFFFFFFF
# infimnist's translation k1 mod 9 as its one-pixel moves, in order: 0 up,
# 1 down, 2 left, 3 right (see `translate`); number 8 leaves the image as it is.
TRANSLATION_MOVES: tuple[tuple[int, ...], ...] = ((0,), (1,), (2,), (3,), (0, 2), (0, 3), (1, 2), (1, 3), ())

# "infimnist" mode: fields are unit-RMS blurred noise times TANGENT_ALPHA pixels.
TANGENT_SIGMA = 4.0  # pixels; smooth on the scale of a stroke's curve
TANGENT_ALPHA = 1.5  # RMS displacement in pixels: visible, still the same digit
TANGENT_FRACTION_BITS = 8  # fields stored in 1/256 px
SOBEL_GAIN = 8  # the Sobel kernel gives 8x the derivative
TANGENT_CANVAS = IMAGE_SIZE + 2  # one zero pixel around: room for the derivative stencils

# "elastic" mode: Simard's parameters, and the bank that stands in for fresh noise.
ELASTIC_ALPHA = 34.0
ELASTIC_SIGMA = 4.0
ELASTIC_BANK_SIZE = 1024  # a power of two: a row is picked with a bit mask
ELASTIC_COMPONENTS = 4
ELASTIC_FRACTION_BITS = 7  # displacements stored in 1/128 px
# A power-of-two canvas makes grid_sample's unnormalisation exact; 2 zero pixels
# around the 28x28 digit also give bilinear sampling its zero fill.
ELASTIC_CANVAS = 32
ELASTIC_BORDER = (ELASTIC_CANVAS - IMAGE_SIZE) // 2

ROUNDING_MAGIC = 2.0 ** 23  # x + 2^23 has the rounded integer of x in its low mantissa bits
DEFAULT_CHUNK = 1024  # images per inner step: keeps the float work in cache and memory small

NOT_THE_ORIGINAL = ("infimnist's index scheme with our own fields and tangent vectors: "
                    "not bit-identical images (infimnist's 350 MB data files are not available)")


# --------------------------------------------------------------------------- per-index parameters


def infimnist_parameters(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k1, k2, sign a, translation number) for int64 `indices`, infimnist's formulas.

    k1 multiplies in 32 bits, as infimnist does: the low 32 bits of i times
    131071 (< 2^49, no int64 overflow), kept to their low 32 bits. k2 is
    reduced modulo first, so any non-negative int64 index works.
    """
    k1 = ((indices & MASK32) * K1_MULTIPLIER & MASK32) % K1_MODULUS
    k2 = (k1 + 1 + 2 * (indices % (FIELD_COUNT // 2))) % FIELD_COUNT  # 2i mod 1522 = 2 (i mod 761)
    sign = 1 - 2 * ((k1 + k2) % 2)
    return k1, k2, sign, k1 % len(TRANSLATION_MOVES)


def _move(flat: torch.Tensor, move: int) -> torch.Tensor:
    """One of infimnist's one-pixel moves of flat row-major 28x28 images (K, 784), as a new tensor.

    infimnist moves the flat 784-byte array c, not the 2-D image:
      0 up:    c[j] = c[j + 28], the last row 0: pixel (r, col) takes (r + 1, col),
               so the digit rises one row and the bottom row is blank;
      1 down:  c[j] = c[j - 28], the first row 0: pixel (r, col) takes (r - 1, col);
      2 left:  c[j] = c[j + 1], then c[j] = 0 where j mod 28 == 0, and c[783] = 0:
               column 0 is blank, column 27 takes the next row's first pixel;
      3 right: c[j] = c[j - 1], then c[j] = 0 where (j - 1) mod 28 == 0, and c[0] = 0:
               column 1 is blank, column 0 takes the previous row's last pixel.
    """
    side, area = IMAGE_SIZE, IMAGE_SIZE**2
    moved = torch.zeros_like(flat)
    if move == 0:
        moved[:, :area - side] = flat[:, side:]
    elif move == 1:
        moved[:, side:] = flat[:, :area - side]
    elif move == 2:
        moved[:, :area - 1] = flat[:, 1:]
        moved[:, 0::side] = 0
    elif move == 3:
        moved[:, 1:] = flat[:, :area - 1]
        moved[:, 1::side] = 0
    else:
        raise ValueError(f"infimnist's moves are 0-3, not {move}")
    return moved


def translate(images: torch.Tensor, number: int) -> torch.Tensor:
    """infimnist's translation `number` (0-8) of uint8 images (K, 28, 28), as a new tensor.

    0 up, 1 down, 2 left, 3 right, 4 up then left, 5 up then right, 6 down
    then left, 7 down then right, 8 none; each a move of the flat array (see
    `_move`), so the horizontal ones carry pixels across row ends.
    """
    flat = images.flatten(1).clone()
    for move in TRANSLATION_MOVES[number]:
        flat = _move(flat, move)
    return flat.view(images.shape)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 tensors holding values below 2^32.

    The multiplier is below 2^27, so no product overflows int64: the same bits
    on every device.
    """
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    return (x >> 16) ^ x


def elastic_draws(indices: torch.Tensor, seed: int,
                  count: int = ELASTIC_COMPONENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Bank rows (K, count) and signs +-1 (K, count) for each index, hashed from (index, seed)."""
    seed_key = _mix32(torch.tensor([seed & MASK32], dtype=torch.int64)).item()
    key = _mix32(_mix32((indices & MASK32) ^ seed_key) ^ (indices >> 32))
    salts = torch.tensor([(j + 1) * 0x9E3779B9 & MASK32 for j in range(count)], device=indices.device)
    draws = _mix32(key[:, None] ^ salts)
    rows = draws & (ELASTIC_BANK_SIZE - 1)
    signs = 1 - 2 * ((draws >> 31) & 1)
    return rows, signs


# --------------------------------------------------------------------------- field banks (cached)


def _blurred_noise(count: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """`count` 28x28 fields of uniform(-1, 1) noise blurred by a Gaussian: (count, 28, 28) float64.

    The noise is drawn on a larger square (3 sigma more on each side) and only
    fully blurred pixels are kept, so a field is equally smooth and strong up
    to the digit's edge. The separable blur is two matrix products. float64 so
    that the fixed-point rounding afterwards comes out the same everywhere.
    """
    radius = math.ceil(3 * sigma)
    side = IMAGE_SIZE + 2 * radius
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel /= kernel.sum()
    blur = torch.zeros(IMAGE_SIZE, side, dtype=torch.float64)  # row p: the kernel centred on p + radius
    for p in range(IMAGE_SIZE):
        blur[p, p:p + 2 * radius + 1] = kernel
    fields = torch.empty(count, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float64)
    for start in range(0, count, 256):  # in slices, to keep the float64 noise small
        noise = torch.rand(min(256, count - start), side, side, generator=generator, dtype=torch.float64)
        fields[start:start + 256] = blur @ (noise * 2 - 1) @ blur.T
    return fields


def tangent_fields(seed: int) -> torch.Tensor:
    """The 1522 "infimnist" displacement fields F, in pixels: (1522, 28, 28) float64.

    Unit-RMS blurred noise times TANGENT_ALPHA, in fixed point (whole 1/256 px),
    limited to +-8 px so that a field times a Sobel value stays exact in float32.
    """
    fields = _blurred_noise(FIELD_COUNT, TANGENT_SIGMA, torch.Generator().manual_seed(seed))
    fields /= fields.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    steps = torch.round(fields * TANGENT_ALPHA * 2**TANGENT_FRACTION_BITS).clamp(-2047, 2047)
    return steps / 2**TANGENT_FRACTION_BITS


@functools.lru_cache(maxsize=8)
def tangent_field_bank(seed: int, device: str = "cpu") -> torch.Tensor:
    """F as multipliers of the Sobel values, on the 30x30 canvas: (2 * 1522, 900) float16.

    Row k is F[k] / 8 with a zero border; row 1522 + k is -F[k] / 8, so the
    sign a is folded into which row is gathered. A value is m / 2048 with
    |m| < 2048: exact in float16, which halves the bytes gathered per image.
    """
    multipliers = F.pad(tangent_fields(seed) / SOBEL_GAIN, (1, 1, 1, 1))
    bank = torch.cat([multipliers, -multipliers]).reshape(2 * FIELD_COUNT, TANGENT_CANVAS**2)
    return bank.to(device=device, dtype=torch.float16)


@functools.lru_cache(maxsize=8)
def tangent_field_steps(seed: int) -> torch.Tensor:
    """The C kernel's bank: tangent_field_bank's rows in whole 1/256 px, (2 * 1522, 32 * 32) int16.

    Row k holds 256 F[k] = 2048 (F[k] / 8), exactly the float16 bank's numbers
    times 2^11, as a 30x30 field at the top left of a 32x32 square of zeros.
    """
    steps = (tangent_field_bank(seed).float() * 2**11).round().to(torch.int16)
    return F.pad(steps.view(-1, TANGENT_CANVAS, TANGENT_CANVAS), (0, 2, 0, 2)).flatten(1)


def elastic_fields(seed: int) -> torch.Tensor:
    """The "elastic" bank in pixels: (1024, 28, 28, 2) float64 (x, y) displacements.

    Blurred uniform noise times alpha / sqrt(4), so that four of them, signed,
    sum to one Simard field; in fixed point (whole 1/128 px).
    """
    noise = _blurred_noise(2 * ELASTIC_BANK_SIZE, ELASTIC_SIGMA, torch.Generator().manual_seed(seed + 0x5EED))
    pixels = noise.view(ELASTIC_BANK_SIZE, 2, IMAGE_SIZE, IMAGE_SIZE).permute(0, 2, 3, 1)
    scale = ELASTIC_ALPHA / math.sqrt(ELASTIC_COMPONENTS) * 2**ELASTIC_FRACTION_BITS
    return torch.round(pixels * scale) / 2**ELASTIC_FRACTION_BITS


@functools.lru_cache(maxsize=8)
def elastic_field_bank(seed: int, device: str = "cpu") -> torch.Tensor:
    """The elastic fields as grid_sample offsets: (1024 + 1, 28 * 28 * 2) float32.

    In grid_sample's normalised units for the 32x32 canvas (align_corners=False:
    one pixel is 2/32). The last row is the identity grid, so the same gather
    that sums an image's four fields also adds the pixel positions.
    """
    offsets = elastic_fields(seed) * (2 / ELASTIC_CANVAS)
    # Pixel p of the canvas has its centre at (2p + 1) / 32 - 1.
    centres = (2 * (torch.arange(IMAGE_SIZE, dtype=torch.float64) + ELASTIC_BORDER) + 1) / ELASTIC_CANVAS - 1
    identity = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # (..., (x, y))
    bank = torch.cat([offsets.reshape(ELASTIC_BANK_SIZE, -1), identity.reshape(1, -1)])
    return bank.to(device=device, dtype=torch.float32)


@functools.cache
def _deform_kernel():
    """kernels/infimnist.c's infimnist_deform with its signature declared (ctypes then checks the
    argument count), or None where it cannot be built."""
    library = native.load("infimnist")
    if library is None:
        return None
    function = library.infimnist_deform
    function.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 2  # 7 arrays, then the images' range
    function.restype = None
    return function


# --------------------------------------------------------------------------- the generator


class InfiniteMnist:
    """Index-addressable deformed MNIST over any train/test split (see the module docstring).

    `images(indices)` and `batch(start, count)` return uint8 (K, 28, 28) images
    and int64 labels on `device`; `gen[i]` one image and its label.

    `kernel`: deform "infimnist" digits with the C kernel (None: on CPU when it
    builds; True: required; False: tensor operations only).
    """

    def __init__(self, train_images: torch.Tensor, train_labels: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor,
                 mode: str = "infimnist", seed: int = 0, device: str | torch.device = "cpu",
                 chunk_size: int = DEFAULT_CHUNK, kernel: bool | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        for name, images in (("train_images", train_images), ("test_images", test_images)):
            if images.dtype != torch.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise ValueError(f"{name} must be uint8 (K, 28, 28), got {images.dtype} {tuple(images.shape)}")
        if len(train_images) == 0:
            raise ValueError("need at least one training digit to deform")
        self.mode, self.seed, self.chunk_size = mode, int(seed), int(chunk_size)
        self.device = torch.device(device)
        self.train_images = train_images.to(self.device)
        self.test_images = test_images.to(self.device)
        self.test_count, self.train_count = len(test_images), len(train_images)
        self.labels = torch.cat([test_labels, train_labels]).to(self.device, torch.int64)
        self.kernel = None
        if mode == "infimnist" and kernel is not False:
            self.kernel = _deform_kernel() if self.device.type == "cpu" else None
            if kernel and self.kernel is None:
                raise RuntimeError(f"the infimnist C kernel was asked for but is unavailable on {self.device} "
                                   "(it needs the CPU and a C compiler; see the log)")
        if self.kernel is not None:  # 32x32 canvases: the kernel's stencils need one more zero ring
            self.bank, border = tangent_field_steps(self.seed), 2
        elif mode == "infimnist":
            self.bank, border = tangent_field_bank(self.seed, str(self.device)), 1
        else:
            self.bank, border = elastic_field_bank(self.seed, str(self.device)), ELASTIC_BORDER
        # The training digits on zero-bordered canvases, ready to gather whole (full MNIST: 54-61 MB).
        self.canvases = F.pad(self.train_images, (border,) * 4).flatten(1)

    @property
    def first_deformed_index(self) -> int:
        return self.test_count + self.train_count

    def epoch_indices(self, epoch: int, count: int) -> torch.Tensor:
        """Indices for training epoch `epoch` of `count` images: a fresh range per epoch."""
        start = self.first_deformed_index + epoch * count
        return torch.arange(start, start + count, device=self.device)

    def source_of(self, indices: torch.Tensor) -> torch.Tensor:
        """Position of each index's source digit in [test digits, training digits]."""
        wrapped = (indices - self.test_count) % self.train_count + self.test_count
        return torch.where(indices < self.test_count, indices, wrapped)

    # ---- access

    def images(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (K, 28, 28) uint8 and labels (K,) int64 at `indices` (any shape, flattened)."""
        indices = torch.as_tensor(indices, dtype=torch.int64, device=self.device).reshape(-1)
        if len(indices) and indices.min() < 0:
            raise IndexError("infinite MNIST indices are non-negative")
        source = self.source_of(indices)
        out = torch.empty(len(indices), IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=self.device)
        deformed = indices >= self.first_deformed_index
        if bool(deformed.all()):
            self._deform_into(out, indices, source - self.test_count)
        else:
            test = indices < self.test_count
            out[test] = self.test_images[indices[test]]
            train = ~test & ~deformed
            out[train] = self.train_images[indices[train] - self.test_count]
            if bool(deformed.any()):
                out[deformed] = self._deformed(indices[deformed], source[deformed] - self.test_count)
        return out, self.labels[source]

    def batch(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images start .. start + count - 1."""
        return self.images(torch.arange(start, start + count, device=self.device))

    def __getitem__(self, index):
        if isinstance(index, int) or (torch.is_tensor(index) and index.ndim == 0):
            images, labels = self.images(torch.tensor([int(index)]))
            return images[0], int(labels[0])
        if isinstance(index, slice):
            if index.stop is None or (index.step or 1) != 1:
                raise IndexError("slices need a stop and step 1: the stream is infinite")
            start = index.start or 0
            return self.batch(start, max(0, index.stop - start))
        return self.images(index)

    def spec(self) -> dict:
        """JSON-able description: enough to know which images an index gives."""
        if self.mode == "infimnist":
            parameters = {
                "deformation": "x' = x + a*(F[k1]*T0 - F[k2]*T1); 0 if x' < 0, 255 if x' > 255, "
                               "else truncated toward zero; then infimnist's translation number k1 mod 9",
                "k1": f"((uint32(i)*{K1_MULTIPLIER}) mod 2^32) mod {K1_MODULUS}",
                "k2": f"(k1 + 1 + 2i) mod {FIELD_COUNT}",
                "a": "+1 if k1 + k2 is even else -1",
                "tangents": "Sobel 3x3 ([1,2,1] smoothing x central difference) / 8, zero padding",
                "field_count": FIELD_COUNT,
                "field_sigma_px": TANGENT_SIGMA,
                "field_rms_displacement_px": TANGENT_ALPHA,
                "field_resolution_px": 2.0**-TANGENT_FRACTION_BITS,
                "translations": "0 up, 1 down, 2 left, 3 right, 4 = 0 then 2, 5 = 0 then 3, "
                                "6 = 1 then 2, 7 = 1 then 3, 8 none; moves of the flat 784-byte array "
                                "(left: c[j] = c[j+1], 0 where j mod 28 == 0; right: c[j] = c[j-1], "
                                "0 where (j-1) mod 28 == 0)",
            }
        else:
            parameters = {
                "deformation": "Simard elastic: bilinear resampling at p + alpha*blur_sigma(U), zero fill, "
                               "round half to even",
                "alpha_px": ELASTIC_ALPHA,
                "sigma_px": ELASTIC_SIGMA,
                "field": f"sum of {ELASTIC_COMPONENTS} signed rows of a bank of {ELASTIC_BANK_SIZE} "
                         f"blurred uniform(-1,1) fields, / sqrt({ELASTIC_COMPONENTS}); "
                         "rows and signs hashed from (index, seed)",
                "field_resolution_px": 2.0**-ELASTIC_FRACTION_BITS,
            }
        return {
            "scheme": "infimnist index scheme: 0..T-1 test digits, T..T+N-1 training digits, "
                      "i >= T+N a deformation of training digit (i - T) mod N",
            "mode": self.mode,
            "seed": self.seed,
            "test_count": self.test_count,
            "train_count": self.train_count,
            "first_deformed_index": self.first_deformed_index,
            "parameters": parameters,
            "generator_version": GENERATOR_VERSION,
            "implementation": "C kernel" if self.kernel is not None else "tensor operations",
            "determinism": "bitwise: all randomness is a function of (index, seed) and all float "
                           "arithmetic is exact",
            "note": NOT_THE_ORIGINAL,
        }

    # ---- deformation

    def _deformed(self, indices: torch.Tensor, train_rows: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(indices), IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=self.device)
        self._deform_into(out, indices, train_rows)
        return out

    def _deform_into(self, out: torch.Tensor, indices: torch.Tensor, train_rows: torch.Tensor) -> None:
        """Write the deformations of `indices` (sources `train_rows`) into `out`, chunk by chunk."""
        if self.kernel is not None:
            self._kernel_deform(out, indices, train_rows)
            return
        chunk = self._tangent_chunk if self.mode == "infimnist" else self._elastic_chunk
        workspace = {}  # buffers reused across chunks: allocating them each time costs page faults
        for start in range(0, len(indices), self.chunk_size):
            stop = start + self.chunk_size
            chunk(out[start:stop], indices[start:stop], train_rows[start:stop], workspace)

    def _kernel_deform(self, out, indices, train_rows) -> None:
        """"infimnist" mode by the C kernel: per-index parameters here, pixels there, threads split the images."""
        k1, k2, sign, translation = infimnist_parameters(indices)
        # The tensors stay referenced here until the kernel returns: a pointer does not keep one alive.
        tensors = [(self.canvases, torch.uint8), (self.bank, torch.int16), (train_rows.contiguous(), torch.int64),
                   (k1 + FIELD_COUNT * (sign < 0), torch.int64),  # the sign a picks the bank half
                   (k2 + FIELD_COUNT * (sign > 0), torch.int64),
                   (translation, torch.int64), (out, torch.uint8)]
        arguments = [native.pointer(tensor, dtype) for tensor, dtype in tensors]
        native.run_split(self.kernel, len(indices), *arguments)

    def _tangent_chunk(self, out, indices, train_rows, workspace) -> None:
        """"infimnist" mode on a chunk: first-order deformation, truncate, translate.

        Works on flat 30x30 canvases (the digit plus a zero border) laid end to
        end, so a neighbour is a fixed offset (+-1 column, +-30 rows) and every
        step is one long contiguous vector operation. Canvas borders get
        garbage derivatives, but the fields are zero there. The chunk is
        processed sorted by translation, so each translation is one slice.
        """
        count, side = len(indices), TANGENT_CANVAS
        length, margin = count * side * side, side + 1  # margin: room for the stencils past either end
        k1, k2, sign, translation = infimnist_parameters(indices)
        order = torch.argsort(translation, stable=True)
        if workspace.get("count") != count:
            new = functools.partial(torch.empty, device=self.device)
            workspace.update(
                count=count, canvases=new(count, side * side, dtype=torch.uint8),
                x=torch.zeros(length + 2 * margin, device=self.device), diff=new(length + 2 * side),
                tangent=new(count, side * side), y=new(count, side * side),
                fields=new(2 * count, side * side, dtype=self.bank.dtype),
                deformed=new(count, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
                translated=new(count, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
            )
        x, diff, fields, y = (workspace[k] for k in ("x", "diff", "fields", "y"))
        tangent = workspace["tangent"].view(-1)

        def at(buffer, offset, extra=0):  # the flat canvases moved by `offset`, `extra` past each end
            return buffer[margin + offset - extra: margin + offset + length + extra]

        digits = torch.index_select(self.canvases, 0, train_rows[order], out=workspace["canvases"])
        at(x, 0).copy_(digits.view(-1))  # the margins stay zero
        # a*F[k1] and -a*F[k2] in one gather: the bank's second half holds -F.
        bank_rows = torch.cat([k1 + FIELD_COUNT * (sign < 0), k2 + FIELD_COUNT * (sign > 0)])
        torch.index_select(self.bank, 0, bank_rows[torch.cat([order, order + count])], out=fields)
        # y = x + a*F[k1]*T0, T0: central difference along x, then [1, 2, 1] down the rows
        torch.sub(at(x, 1, side), at(x, -1, side), out=diff)
        torch.add(diff[:length], diff[2 * side:], out=tangent)
        tangent.add_(diff[side:side + length], alpha=2)
        torch.addcmul(at(x, 0).view(count, -1), workspace["tangent"], fields[:count], out=y)
        # y -= a*F[k2]*T1, T1: central difference along y, then [1, 2, 1] along the row
        torch.sub(at(x, side, 1), at(x, -side, 1), out=diff[:length + 2])
        torch.add(diff[:length], diff[2:length + 2], out=tangent)
        tangent.add_(diff[1:length + 1], alpha=2)
        y.addcmul_(workspace["tangent"], fields[count:])  # float16 fields widen exactly to float32
        # infimnist truncates toward zero; after the clamp that is the floor. The
        # int32 -> uint8 cast keeps the low byte, the whole number.
        _round_to_bytes(y.clamp_(0, 255).floor_())
        deformed, translated = workspace["deformed"], workspace["translated"]
        deformed.copy_(y.view(torch.int32).view(count, side, side)[:, 1:-1, 1:-1])  # the digit, without the border
        first = 0
        for number, images in enumerate(torch.bincount(translation, minlength=len(TRANSLATION_MOVES)).tolist()):
            rows = slice(first, first + images)
            translated[rows] = translate(deformed[rows], number)
            first += images
        torch.index_select(translated, 0, torch.argsort(order), out=out)

    def _elastic_chunk(self, out, indices, train_rows, workspace) -> None:
        """"elastic" mode on a chunk: hashed bank combination, bilinear resampling, round.

        The digits sit on 32x32 canvases with a zero border, which gives the
        resampling its zero fill and makes grid_sample's arithmetic exact.
        """
        count, side = len(indices), ELASTIC_CANVAS
        if workspace.get("count") != count:
            workspace.update(count=count, x=torch.empty(count, 1, side, side, device=self.device),
                             canvases=torch.empty(count, side * side, dtype=torch.uint8, device=self.device))
        x = workspace["x"]
        digits = torch.index_select(self.canvases, 0, train_rows, out=workspace["canvases"])
        x.view(-1).copy_(digits.view(-1))
        rows, signs = elastic_draws(indices, self.seed)
        identity = torch.full((count, 1), ELASTIC_BANK_SIZE, device=self.device)
        grid = F.embedding_bag(torch.cat([rows, identity], dim=1), self.bank, mode="sum",
                               per_sample_weights=torch.cat([signs, torch.ones_like(identity)], dim=1).float())
        grid = grid.view(count, IMAGE_SIZE, IMAGE_SIZE, 2)
        resampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        _round_to_bytes(resampled)  # a convex mix of 0-255 values: no clamp needed
        out.copy_(resampled.view(torch.int32).view(count, IMAGE_SIZE, IMAGE_SIZE))


def _round_to_bytes(values: torch.Tensor) -> None:
    """In place: values in [0, 255] become 2^23 + round(value).

    Read as int32 its low byte is the rounded value, and an int32 -> uint8 cast
    keeps exactly that byte.
    """
    values.add_(ROUNDING_MAGIC)
