import numpy as np
import pytest

from simclr_hpc.data import generated


def test_same_seed_gives_identical_bytes_and_other_seed_differs():
    x1, y1 = generated.generate_shapes(5, 4, 32, seed=3)
    x2, y2 = generated.generate_shapes(5, 4, 32, seed=3)
    x3, _ = generated.generate_shapes(5, 4, 32, seed=4)
    assert x1.tobytes() == x2.tobytes() and (y1 == y2).all()
    assert x1.tobytes() != x3.tobytes()
    assert x1.shape == (20, 32, 32, 3) and x1.dtype == np.uint8


def test_more_classes_or_images_leave_existing_images_unchanged():
    small, _ = generated.generate_shapes(3, 2, 24, seed=1)
    big, _ = generated.generate_shapes(4, 3, 24, seed=1)
    assert (small[0:2] == big[0:2]).all() and (small[2:4] == big[3:5]).all()


def test_train_and_test_streams_differ():
    train, _ = generated.generate_shapes(2, 3, 32, seed=0, split="train")
    test, _ = generated.generate_shapes(2, 3, 32, seed=0, split="test")
    assert train.tobytes() != test.tobytes()


def test_thirty_class_names_are_distinct_and_limits_enforced():
    names = generated.class_names(generated.MAX_CLASSES)
    assert len(set(names)) == generated.MAX_CLASSES >= 20
    for bad in (1, generated.MAX_CLASSES + 1):
        with pytest.raises(ValueError, match="number of classes"):
            generated.class_names(bad)


def test_colour_does_not_reveal_the_class():
    # A nearest-centroid classifier on mean RGB must stay near chance (0.1): class identity is shape, not colour.
    x, y = generated.generate_shapes(10, 40, 32, seed=0)
    feats = x.reshape(len(x), -1, 3).mean(1)
    train = np.arange(len(x)) % 2 == 0
    centroids = np.stack([feats[train & (y == k)].mean(0) for k in range(10)])
    pred = np.argmin(((feats[~train, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y[~train]).mean() < 0.25


def test_images_vary_in_position_and_are_not_blank():
    x, _ = generated.generate_shapes(2, 6, 32, seed=0)
    assert all(img.std() > 10 for img in x)
    assert len({img.tobytes() for img in x}) == len(x)
