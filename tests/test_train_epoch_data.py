"""Training on fresh data every epoch (the infinite MNIST variant)."""

import pytest
import torch

from conv_core.infinite import InfiniteMnist
from conv_core.train import TrainConfig, train


def _digits(count=300, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator),
            torch.randint(0, 10, (count,), generator=generator))


def test_each_epoch_trains_on_what_epoch_data_gives():
    images, labels = _digits()
    stream = InfiniteMnist(images, labels, images[:10], labels[:10])
    asked = []

    def fresh(epoch):
        asked.append(epoch)
        return stream.images(stream.epoch_indices(epoch, len(labels)))

    config = TrainConfig(model="mlp", epochs=3, batch_size=100, device="cpu")
    deformed = train(config, images, labels, epoch_data=fresh)
    plain = train(config, images, labels)
    assert asked == [1, 2, 3]
    # Epochs see disjoint index ranges, so different images.
    first, second = (stream.epoch_indices(e, len(labels)) for e in (1, 2))
    assert int(first.max()) < int(second.min())
    assert not torch.equal(stream.images(first)[0], stream.images(second)[0])
    assert any(not torch.equal(a, b) for a, b in zip(deformed.model.state_dict().values(),
                                                     plain.model.state_dict().values()))


def test_epoch_data_of_the_wrong_size_is_refused():
    images, labels = _digits(100)
    with pytest.raises(ValueError, match="every epoch needs 100"):
        train(TrainConfig(model="mlp", epochs=1, device="cpu"), images, labels,
              epoch_data=lambda epoch: (images[:50], labels[:50]))
