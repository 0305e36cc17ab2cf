import torch

from conv_core.augment import SHIFTS, expand_shifts, random_crop_batch, shift_batch, shift_images


def _reference_shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(image)
    h, w = image.shape
    for r in range(h):
        for c in range(w):
            if 0 <= r + dy < h and 0 <= c + dx < w:
                out[r + dy, c + dx] = image[r, c]
    return out


def test_expansion_gives_exactly_nine_times_the_data_each_a_true_shift():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.arange(5)
    expanded, expanded_labels, shift_index = expand_shifts(images, labels)
    assert expanded.shape == (45, 28, 28) and expanded.dtype == torch.uint8
    assert torch.equal(expanded_labels, labels.repeat(9))
    for k, (dy, dx) in enumerate(SHIFTS):
        for i in range(5):
            assert shift_index[k * 5 + i] == k
            assert torch.equal(expanded[k * 5 + i], _reference_shift(images[i], dy, dx))
    # The 26x26 centre window of the (-1,-1)-shifted image is the source's top-left 26x26 crop.
    assert torch.equal(expanded[0, :26, :26], images[0, 1:27, 1:27])
    assert torch.equal(expanded[4 * 5:5 * 5], images)  # shift (0, 0) is the identity


def test_random_shift_is_one_of_the_nine_and_reproducible():
    images = torch.rand(64, 1, 28, 28)
    first = shift_batch(images, torch.Generator().manual_seed(3))
    again = shift_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    used = set()
    for i in range(64):
        matches = [k for k, (dy, dx) in enumerate(SHIFTS)
                   if torch.equal(first[i, 0], _reference_shift(images[i, 0], dy, dx))]
        assert len(matches) == 1
        used.add(matches[0])
    assert len(used) > 4


def test_shift_keeps_channels_and_accepts_per_image_offsets():
    images = torch.rand(2, 3, 8, 8)
    shifted = shift_images(images, torch.tensor([1, 0]), torch.tensor([0, -1]))
    assert torch.equal(shifted[0, :, 1:], images[0, :, :-1]) and shifted[0, :, 0].abs().sum() == 0
    assert torch.equal(shifted[1, :, :, :-1], images[1, :, :, 1:])


def test_shift_batch_is_a_one_pixel_shift_with_zero_fill():
    generator = torch.Generator().manual_seed(0)
    # Values 1..255 everywhere, so any zero in the output can only come from the fill.
    images = torch.randint(1, 256, (200, 1, 28, 28), dtype=torch.uint8, generator=generator)
    shifted = shift_batch(images, torch.Generator().manual_seed(1))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8

    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    seen = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                   if torch.equal(shifted[i], padded[i, :, 1 - dy:29 - dy, 1 - dx:29 - dx])]
        assert len(matches) == 1, f"image {i} is not a single +-1 pixel shift"
        seen.add(matches[0])
    assert len(seen) == 9  # all nine shifts occur in 200 draws

    again = shift_batch(images, torch.Generator().manual_seed(1))
    assert torch.equal(again, shifted)  # the generator alone decides


def test_random_crop_batch_takes_windows_of_the_source():
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).reshape(4, 1, 28, 28)
    crops = random_crop_batch(images, 24, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 1, 24, 24)
    for image, crop in zip(images, crops):
        top, left = divmod(int(crop[0, 0, 0].item()) % (28 * 28), 28)
        assert top <= 4 and left <= 4
        assert torch.equal(crop, image[:, top:top + 24, left:left + 24])
