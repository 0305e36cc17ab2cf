"""Infinite MNIST: the index scheme, determinism, and both deformations against
straightforward float64 re-implementations of their formulas."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conv_core import infinite, native
from conv_core.infinite import (InfiniteMnist, elastic_draws, elastic_fields, infimnist_parameters,
                                tangent_fields, translate)

MODES = ("infimnist", "elastic")

# Tiny synthetic split, the same in every process: 3 test and 5 training "digits".
SYNTHETIC = """
import torch
g = torch.Generator().manual_seed(1234)
blobs = (torch.rand(8, 1, 28, 28, generator=g) > 0.8).float()
digits = (torch.nn.functional.avg_pool2d(blobs, 5, 1, 2)[:, 0] * 700).clamp(0, 255).to(torch.uint8)
digits[:, :3], digits[:, -3:], digits[:, :, :3], digits[:, :, -3:] = 0, 0, 0, 0
labels = torch.arange(8) % 10
"""


def synthetic():
    scope = {}
    exec(SYNTHETIC, scope)
    digits, labels = scope["digits"], scope["labels"]
    return digits[3:], labels[3:], digits[:3], labels[:3]  # train, train labels, test, test labels


def digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def sample():
    from conv_core.data import MnistConfig, load_mnist
    return load_mnist(MnistConfig(source="sample"))


def generator_on(splits, mode, **kwargs):
    return InfiniteMnist(splits.train_images, splits.train_labels, splits.test_images, splits.test_labels,
                         mode=mode, **kwargs)


# --------------------------------------------------------------------------- reference formulas


def infimnist_translation(c: list, t: int) -> list:
    """infimnist's translation loops, element by element, in place on a flat list of 784 values."""
    if t == 0:
        for j in range(784 - 28):
            c[j] = c[j + 28]
        for j in range(784 - 28, 784):
            c[j] = 0
    elif t == 1:
        for j in range(783, 27, -1):
            c[j] = c[j - 28]
        for j in range(27, -1, -1):
            c[j] = 0
    elif t == 2:
        for j in range(783):
            c[j] = 0 if j % 28 == 0 else c[j + 1]
        c[783] = 0
    elif t == 3:
        for j in range(783, 0, -1):
            c[j] = 0 if (j - 1) % 28 == 0 else c[j - 1]
        c[0] = 0
    elif t < 8:
        infimnist_translation(c, (0, 0, 1, 1)[t - 4])
        infimnist_translation(c, (2, 3, 2, 3)[t - 4])
    return c


def reference_infimnist(train, test_count, i, fields):
    """One image straight from the formula, float64 and Python integers; fields = tangent_fields(seed)."""
    x = train[(i - test_count) % len(train)].double()
    k1 = (i * 131071 % 2**32) % 1521
    k2 = (k1 + 1 + 2 * i) % 1522
    a = 1 if (k1 + k2) % 2 == 0 else -1
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)
    t0 = F.conv2d(x[None, None], sobel[None, None], padding=1)[0, 0] / 8
    t1 = F.conv2d(x[None, None], sobel.T[None, None], padding=1)[0, 0] / 8
    y = (x + a * (fields[k1] * t0 - fields[k2] * t1)).clamp(0, 255).trunc()
    moved = infimnist_translation(y.to(torch.uint8).flatten().tolist(), k1 % 9)
    return torch.tensor(moved, dtype=torch.uint8).view(28, 28)


def reference_elastic(train, test_count, i, fields, seed=0):
    """One image: the hashed bank fields summed, bilinear sampling with zero fill, float64.

    fields = elastic_fields(seed)."""
    x = train[(i - test_count) % len(train)].double()
    rows, signs = elastic_draws(torch.tensor([i]), seed)
    field = (signs[0, :, None, None, None] * fields[rows[0]]).sum(0)  # (28, 28, (x, y)) px
    r, c = torch.meshgrid(torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64),
                          indexing="ij")
    sx, sy = c + field[..., 0], r + field[..., 1]
    x0, y0 = sx.floor(), sy.floor()
    wx, wy = sx - x0, sy - y0

    def pixel(row, col):
        inside = (row >= 0) & (row < 28) & (col >= 0) & (col < 28)
        return x[row.clamp(0, 27).long(), col.clamp(0, 27).long()] * inside

    top = (1 - wx) * pixel(y0, x0) + wx * pixel(y0, x0 + 1)
    bottom = (1 - wx) * pixel(y0 + 1, x0) + wx * pixel(y0 + 1, x0 + 1)
    return ((1 - wy) * top + wy * bottom).round().to(torch.uint8)


REFERENCES = {"infimnist": (reference_infimnist, tangent_fields), "elastic": (reference_elastic, elastic_fields)}


# --------------------------------------------------------------------------- index scheme


@pytest.mark.parametrize("mode", MODES)
def test_indices_below_the_first_deformed_one_are_the_source_digits_test_first(mode):
    train, train_labels, test, test_labels = synthetic()
    gen = InfiniteMnist(train, train_labels, test, test_labels, mode=mode)
    assert gen.first_deformed_index == 8
    images, labels = gen.images(torch.arange(8))
    assert torch.equal(images, torch.cat([test, train]))
    assert torch.equal(labels, torch.cat([test_labels, train_labels]))
    image, label = gen[4]
    assert torch.equal(image, train[1]) and label == int(train_labels[1])


@pytest.mark.parametrize("mode", MODES)
def test_deformations_wrap_around_the_training_set_and_keep_the_label(mode):
    train, train_labels, test, test_labels = synthetic()
    gen = InfiniteMnist(train, train_labels, test, test_labels, mode=mode)
    indices = torch.arange(8, 8 + 40)
    images, labels = gen.images(indices)
    sources = (indices - 3) % 5
    assert torch.equal(gen.source_of(indices), sources + 3)
    assert torch.equal(labels, train_labels[sources])
    # i and i + N: the same source digit, a different deformation
    assert torch.equal(gen.source_of(indices + 5), gen.source_of(indices))
    assert all(not torch.equal(images[j], images[j + 5]) for j in range(35))


def test_full_mnist_numbers_follow_infimnist():
    blank = torch.zeros(60000, 28, 28, dtype=torch.uint8)
    gen = InfiniteMnist(blank, torch.zeros(60000, dtype=torch.long), blank[:10000],
                        torch.zeros(10000, dtype=torch.long))
    assert gen.first_deformed_index == 70000
    i = torch.tensor([0, 9999, 10000, 69999, 70000, 70000 + 60000 * 7 + 5])
    assert gen.source_of(i).tolist() == [0, 9999, 10000, 69999, 10000, 10005]
    big = torch.tensor([2**40 + 3, 2**62 + 1])  # no int64 overflow, however large the index
    k1, k2, sign, shift = infimnist_parameters(big)
    for j, value in enumerate(big.tolist()):
        assert k1[j] == (value * 131071 % 2**32) % 1521 and k2[j] == (k1[j].item() + 1 + 2 * value) % 1522
        assert sign[j] == (1 if (k1[j] + k2[j]) % 2 == 0 else -1) and shift[j] == k1[j] % 9


# (index, k1, k2, sign a, translation number), worked out by hand from infimnist's formulas.
# 2^32 / 131071 = 32768.25, so from i = 32769 on the 32-bit product wraps around:
#   i = 32768: 32768 * 131071 = 4,294,934,528 < 2^32; mod 1521 = 4,294,934,528 - 1521 * 2,823,757 = 131
#              k2 = (131 + 1 + 65,536) mod 1522 = 65,668 - 1522 * 43 = 222; 131 mod 9 = 5
#   i = 32769: 32769 * 131071 = 4,295,065,599 - 2^32 = 98,303; 98,303 - 1521 * 64 = 959
#              k2 = (959 + 1 + 65,538) mod 1522 = 66,498 - 1522 * 43 = 1052; 959 = 9 * 106 + 5
#   i = 40000: 5,242,840,000 - 2^32 = 947,872,704; - 1521 * 623,190 = 714
#              k2 = (714 + 1 + 80,000) mod 1522 = 80,715 - 1522 * 53 = 49; 714 = 9 * 79 + 3
#   i = 70000: 9,174,970,000 - 2 * 2^32 = 585,035,408; - 1521 * 384,638 = 1010
#              k2 = (1010 + 1 + 140,000) mod 1522 = 141,011 - 1522 * 92 = 987; 1010 = 9 * 112 + 2
#   i = 10^6:  131,071,000,000 - 30 * 2^32 = 2,221,981,120; - 1521 * 1,460,868 = 892
#              k2 = (892 + 1 + 2,000,000) mod 1522 = 2,000,893 - 1522 * 1314 = 985; 892 = 9 * 99 + 1
#   i = 2^32 + 5: uint32(i) = 5; 5 * 131071 = 655,355 - 1521 * 430 = 1325
#              2^32 = 1522 * 2,821,923 + 490, so k2 = (1325 + 1 + 2 * (490 + 5)) mod 1522 = 2316 - 1522 = 794
#   1522 is even, so k2 = k1 + 1 (mod 2): k1 + k2 is always odd and a always -1.
INFIMNIST_PARAMETERS = [
    (1, 265, 268, -1, 4),
    (32768, 131, 222, -1, 5),
    (32769, 959, 1052, -1, 5),
    (40000, 714, 49, -1, 3),
    (70000, 1010, 987, -1, 2),
    (70001, 1275, 1254, -1, 6),
    (70006, 1079, 1068, -1, 8),
    (10**6, 892, 985, -1, 1),
    (123456789, 1267, 786, -1, 7),
    (2**32 + 5, 1325, 794, -1, 2),
    (10**12, 243, 1432, -1, 0),
]


def test_per_index_parameters_are_infimnists_with_the_32_bit_wrap():
    indices = torch.tensor([row[0] for row in INFIMNIST_PARAMETERS])
    got = torch.stack(infimnist_parameters(indices), dim=1).tolist()
    assert [[i, *values] for i, values in zip(indices.tolist(), got)] == [list(row) for row in INFIMNIST_PARAMETERS]
    # a is -1 for every index, as the parity argument says
    assert (infimnist_parameters(torch.arange(70000, 80000))[2] == -1).all()


def test_epochs_get_fresh_ranges_and_indices_must_be_non_negative():
    gen = InfiniteMnist(*synthetic())
    assert torch.equal(gen.epoch_indices(0, 4), torch.arange(8, 12))
    assert torch.equal(gen.epoch_indices(2, 4), torch.arange(16, 20))
    with pytest.raises(IndexError):
        gen.images(torch.tensor([3, -1]))
    with pytest.raises(ValueError):
        InfiniteMnist(*synthetic(), mode="warp")


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("mode", MODES)
def test_same_index_same_bytes_across_instances_chunkings_and_batch_shapes(mode):
    train, train_labels, test, test_labels = synthetic()
    one = InfiniteMnist(train, train_labels, test, test_labels, mode=mode)
    two = InfiniteMnist(train, train_labels, test, test_labels, mode=mode, chunk_size=7)
    indices = torch.arange(8, 8 + 50)
    images, _ = one.images(indices)
    assert torch.equal(images, two.images(indices)[0])
    assert torch.equal(images, one.batch(8, 50)[0])
    assert torch.equal(images, one[8:58][0])
    # any order, mixed with source digits, one at a time
    mixed = torch.tensor([40, 2, 9, 6, 57, 9])
    expected = torch.cat([images[32:33], test[2:3], images[1:2], train[3:4], images[49:50], images[1:2]])
    assert torch.equal(one.images(mixed)[0], expected)
    assert torch.equal(one[40][0], images[32])
    # different indices, different images; a different seed, different deformations
    assert len({digest(image) for image in images}) == len(images)
    other_seed, _ = InfiniteMnist(train, train_labels, test, test_labels, mode=mode, seed=1).images(indices)
    assert not torch.equal(images, other_seed)


def test_same_bytes_in_a_fresh_process():
    code = SYNTHETIC + (
        "import hashlib\n"
        "from conv_core.infinite import InfiniteMnist\n"
        "for mode in ('infimnist', 'elastic'):\n"
        "    gen = InfiniteMnist(digits[3:], labels[3:], digits[:3], labels[:3], mode=mode)\n"
        "    images, _ = gen.batch(8, 300)\n"
        "    print(hashlib.sha256(images.numpy().tobytes()).hexdigest())\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = [digest(InfiniteMnist(*synthetic(), mode=mode).batch(8, 300)[0]) for mode in MODES]
    assert child.stdout.split() == here


# --------------------------------------------------------------------------- the deformations


def needs_kernel(kernel):
    """The C kernel is tested wherever a C compiler is; where none is, only the tensor path can be."""
    if kernel and shutil.which(os.environ.get("CC") or "cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    return kernel


@pytest.mark.parametrize("mode, kernel", [("infimnist", True), ("infimnist", False), ("elastic", None)])
def test_deformations_equal_the_formula_computed_plainly_in_float64(mode, kernel, sample):
    gen = generator_on(sample, mode, chunk_size=64, kernel=needs_kernel(kernel))
    first = gen.first_deformed_index
    indices = [first, first + 1, first + 4000, first + 12345, 10**9 + 7, 2**33 + 11]
    indices += list(range(first + 100, first + 190))  # more than one chunk
    images, _ = gen.images(torch.tensor(indices))
    reference, fields = REFERENCES[mode][0], REFERENCES[mode][1](0)
    for image, i in zip(images, indices):
        expected = reference(sample.train_images, len(sample.test_images), i, fields)
        assert torch.equal(image, expected), f"index {i}: {(image.int() - expected.int()).abs().max()} off"


@pytest.mark.parametrize("mode, tolerance", [("infimnist", 0.25), ("elastic", 0.40)])
def test_deformations_keep_the_ink_roughly_and_change_the_digit(mode, tolerance, sample):
    """Measured on the sample: ink within +-25% of the source for ~96% of the
    "infimnist" deformations (clipping the first-order undershoot adds ~6% on
    average), within +-40% for ~98% of Simard's (alpha 34 thins and thickens
    strokes more)."""
    gen = generator_on(sample, mode)
    indices = gen.epoch_indices(3, 4000)
    images, labels = gen.images(indices)
    sources = sample.train_images[gen.source_of(indices) - len(sample.test_images)]
    assert images.dtype == torch.uint8 and images.shape == (4000, 28, 28)
    assert torch.equal(labels, sample.train_labels[gen.source_of(indices) - len(sample.test_images)])
    ink = images.float().sum((1, 2)) / sources.float().sum((1, 2))
    assert ((ink - 1).abs() <= tolerance).float().mean() >= 0.95
    assert 0.9 < ink.mean() < 1.1
    if mode == "infimnist":  # compare with the source moved by the same translation
        numbers = infimnist_parameters(indices)[3]
        for number in range(9):
            sources[numbers == number] = translate(sources[numbers == number], number)
    change = (images.float() - sources.float()).abs().mean((1, 2))
    assert (change > 0).all() and change.median() > 5  # grey levels per pixel


# --------------------------------------------------------------------------- translation and truncation

# A 28x28 image with six marked pixels, (row, column): value; and where each of
# infimnist's 9 translations puts them, worked out by hand from its flat-array
# loops (None: the pixel falls off, or lands on the column a horizontal move blanks).
MARKS = {(5, 7): 1, (0, 0): 2, (27, 27): 3, (10, 0): 4, (10, 27): 5, (12, 1): 6}
MOVED_MARKS = [
    # 0 up: (r, c) takes (r + 1, c)
    {(5, 7): (4, 7), (0, 0): None, (27, 27): (26, 27), (10, 0): (9, 0), (10, 27): (9, 27), (12, 1): (11, 1)},
    # 1 down: (r, c) takes (r - 1, c)
    {(5, 7): (6, 7), (0, 0): (1, 0), (27, 27): None, (10, 0): (11, 0), (10, 27): (11, 27), (12, 1): (13, 1)},
    # 2 left: column 27 of row 9 takes row 10's first pixel; column 0 is blank, so column 1 is lost
    {(5, 7): (5, 6), (0, 0): None, (27, 27): (27, 26), (10, 0): (9, 27), (10, 27): (10, 26), (12, 1): None},
    # 3 right: column 0 of row 11 takes row 10's last pixel; column 1 is blank, so column 0 is lost
    {(5, 7): (5, 8), (0, 0): None, (27, 27): None, (10, 0): None, (10, 27): (11, 0), (12, 1): (12, 2)},
    # 4 up, then left
    {(5, 7): (4, 6), (0, 0): None, (27, 27): (26, 26), (10, 0): (8, 27), (10, 27): (9, 26), (12, 1): None},
    # 5 up, then right
    {(5, 7): (4, 8), (0, 0): None, (27, 27): (27, 0), (10, 0): None, (10, 27): (10, 0), (12, 1): (11, 2)},
    # 6 down, then left
    {(5, 7): (6, 6), (0, 0): (0, 27), (27, 27): None, (10, 0): (10, 27), (10, 27): (11, 26), (12, 1): None},
    # 7 down, then right
    {(5, 7): (6, 8), (0, 0): None, (27, 27): None, (10, 0): None, (10, 27): (12, 0), (12, 1): (13, 2)},
    # 8 none
    {mark: mark for mark in MARKS},
]


def marked_image(places) -> torch.Tensor:
    """The image with MARKS' values at `places` (mark -> position or None)."""
    image = torch.zeros(28, 28, dtype=torch.uint8)
    for mark, place in places.items():
        if place is not None:
            image[place] = MARKS[mark]
    return image


@pytest.mark.parametrize("number", range(9))
def test_each_translation_moves_the_flat_array_as_infimnist_does(number):
    source, expected = marked_image({mark: mark for mark in MARKS}), marked_image(MOVED_MARKS[number])
    assert torch.equal(translate(source[None], number)[0], expected)
    assert torch.equal(torch.tensor(infimnist_translation(source.flatten().tolist(), number)).view(28, 28), expected)


@pytest.fixture
def constant_fields(monkeypatch):
    """Make every "infimnist" field the constant `value` px (seed 99 only, its banks rebuilt)."""
    def use(value):
        monkeypatch.setattr(infinite, "tangent_fields", lambda seed: torch.full((1522, 28, 28), float(value),
                                                                                dtype=torch.float64))
        infinite.tangent_field_bank.cache_clear()
        infinite.tangent_field_steps.cache_clear()
        return 99
    yield use
    infinite.tangent_field_bank.cache_clear()
    infinite.tangent_field_steps.cache_clear()


@pytest.mark.parametrize("kernel", [True, False])
def test_both_paths_translate_like_infimnist_at_the_image_edges(kernel, constant_fields):
    """With zero fields the deformation leaves the digit as it is and only the translation shows."""
    digit = marked_image({mark: mark for mark in MARKS})
    gen = InfiniteMnist(digit[None], torch.tensor([7]), digit[None], torch.tensor([7]),
                        seed=constant_fields(0), kernel=needs_kernel(kernel))
    indices = torch.arange(2, 200)
    numbers = infimnist_parameters(indices)[3]
    assert set(numbers.tolist()) == set(range(9))
    images, _ = gen.images(indices)
    for image, number in zip(images, numbers.tolist()):
        assert torch.equal(image, marked_image(MOVED_MARKS[number])), f"translation {number}"


@pytest.mark.parametrize("kernel", [True, False])
def test_bytes_are_truncated_toward_zero_not_rounded(kernel, constant_fields):
    """Every field -1.5 px; the digit's rows are all `row`, so (rows 6-19) T1 = 0,
    T0 = (x[c+1] - x[c-1]) / 2, and with a = -1, x' = x + 0.75 (x[c+1] - x[c-1])."""
    row = torch.zeros(28, dtype=torch.uint8)
    row[2:5] = torch.tensor([3, 3, 4])          # x' = 3 + 0.75 * (4 - 3) = 3.75 at column 3
    row[7:10] = torch.tensor([253, 254, 255])   # x' = 254 + 0.75 * 2 = 255.5 at column 8
    row[12:15] = torch.tensor([2, 1, 0])        # x' = 1 + 0.75 * -2 = -0.5 at column 13
    row[17:20] = torch.tensor([9, 10, 11])      # x' = 10 + 0.75 * 2 = 11.5 at column 18
    digit = torch.zeros(28, 28, dtype=torch.uint8)
    digit[5:21] = row
    gen = InfiniteMnist(digit[None], torch.tensor([7]), digit[None], torch.tensor([7]),
                        seed=constant_fields(-1.5), kernel=needs_kernel(kernel))
    k1, _, sign, number = infimnist_parameters(torch.tensor([70006]))
    assert int(number) == 8 and int(sign) == -1  # no translation, a = -1
    image = gen[70006][0]
    assert image[6:20, [3, 8, 13, 18]].tolist() == [[3, 255, 0, 11]] * 14  # rounding would give 4, 255, 0, 12
    # every pixel of those rows: the formula, clamped, truncated
    padded = F.pad(row.double(), (1, 1))
    expected = (row.double() + 0.75 * (padded[2:] - padded[:-2])).clamp(0, 255).trunc().to(torch.uint8)
    assert torch.equal(image[6:20], expected.expand(14, 28))


def test_spec_is_json_and_says_what_it_is():
    for mode in MODES:
        spec = InfiniteMnist(*synthetic(), mode=mode).spec()
        again = json.loads(json.dumps(spec))
        assert again["mode"] == mode and again["first_deformed_index"] == 8
        assert again["train_count"] == 5 and again["test_count"] == 3
        assert "not bit-identical" in again["note"]


# --------------------------------------------------------------------------- the C kernel


def test_the_kernel_gives_the_bytes_of_the_tensor_operations(sample):
    kernel = generator_on(sample, "infimnist", kernel=needs_kernel(True))
    tensors = generator_on(sample, "infimnist", kernel=False)
    assert kernel.kernel is not None and tensors.kernel is None
    assert kernel.spec()["implementation"] == "C kernel"
    indices = torch.cat([kernel.epoch_indices(7, 20000), torch.tensor([2**40 + 7, 10**12, 2**62 + 1])])
    assert torch.equal(kernel.images(indices)[0], tensors.images(indices)[0])
    # one image, an odd count, and a thread count that leaves uneven parts
    assert torch.equal(kernel[123457][0], tensors[123457][0])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(kernel.images(indices[:997])[0], tensors.images(indices[:997])[0])
    finally:
        torch.set_num_threads(before)


def test_without_a_compiler_the_tensor_path_gives_the_same_bytes(tmp_path):
    code = SYNTHETIC + (
        "import hashlib, logging, pytest\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from conv_core.infinite import InfiniteMnist\n"
        "gen = InfiniteMnist(digits[3:], labels[3:], digits[:3], labels[:3])\n"
        "assert gen.kernel is None and gen.spec()['implementation'] == 'tensor operations'\n"
        "print(hashlib.sha256(gen.batch(8, 300)[0].numpy().tobytes()).hexdigest())\n"
        "with pytest.raises(RuntimeError, match='C kernel'):\n"
        "    InfiniteMnist(digits[3:], labels[3:], digits[:3], labels[:3], kernel=True)\n")
    environment = {**os.environ, "CC": str(tmp_path / "no-such-compiler"), "CONVLAB_KERNEL_CACHE": str(tmp_path)}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [digest(InfiniteMnist(*synthetic(), kernel=False).batch(8, 300)[0])]
    assert "could not compile kernel 'infimnist'" in child.stderr and "using tensor operations" in child.stderr
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob(".*"))  # no half-written library left


def test_the_kernel_is_compiled_once_into_its_cache(tmp_path):
    needs_kernel(True)
    code = ("from conv_core import native\n"
            "print(native.load('infimnist')._name)\n")
    environment = {**os.environ, "CONVLAB_KERNEL_CACHE": str(tmp_path / "kernels")}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    library = first.stdout.strip()
    assert library.startswith(str(tmp_path / "kernels" / "infimnist-")) and library.endswith(".so")
    built = os.stat(library).st_mtime_ns
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert again.stdout.strip() == library and os.stat(library).st_mtime_ns == built
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [os.path.basename(library)]


def test_run_split_covers_every_item_once_in_contiguous_parts():
    seen = []

    def record(tag, start, stop):
        seen.append((tag, start.value, stop.value))

    native.run_split(record, 1000, "x", threads=3, grain=1)
    assert sorted(seen) == [("x", 0, 333), ("x", 333, 666), ("x", 666, 1000)]
    seen.clear()
    native.run_split(record, 100, "y", threads=4, grain=64)  # one part per started 64 items
    assert sorted(seen) == [("y", 0, 50), ("y", 50, 100)]
    seen.clear()
    native.run_split(record, 0, "z", threads=2)
    assert seen == [("z", 0, 0)]


def test_a_home_without_a_writable_cache_builds_into_the_temporary_directory(tmp_path):
    needs_kernel(True)
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made under a file")
    (tmp_path / "tmp").mkdir()
    environment = {k: v for k, v in os.environ.items() if k != "CONVLAB_KERNEL_CACHE"}
    environment.update(XDG_CACHE_HOME=str(blocker / "cache"), TMPDIR=str(tmp_path / "tmp"))
    code = "from conv_core import native\nprint(native.load('infimnist')._name)\n"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    library = child.stdout.strip()
    assert library.startswith(str(tmp_path / "tmp" / f"convlab-kernels-{os.getuid()}" / "infimnist-"))
    assert "could not compile" not in child.stderr
