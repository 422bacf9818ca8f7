import numpy as np
import pytest

from simclr_hpc.data.sources import DataError
from simclr_hpc.data.subsets import class_balanced_fraction, class_subset, label_map, positions_for_classes

LABELS = np.repeat(np.arange(5), [100, 100, 100, 50, 3])  # imbalanced on purpose
np.random.default_rng(0).shuffle(LABELS)


def test_fraction_is_class_balanced_with_at_least_one_per_class():
    idx = class_balanced_fraction(LABELS, 0.1, seed=0)
    assert (np.diff(idx) > 0).all()
    assert np.bincount(LABELS[idx]).tolist() == [10, 10, 10, 5, 1]
    one_percent = class_balanced_fraction(LABELS, 0.01, seed=0)
    assert np.bincount(LABELS[one_percent]).tolist() == [1, 1, 1, 1, 1]


def test_fraction_is_deterministic_nested_and_seed_dependent():
    a, b = class_balanced_fraction(LABELS, 0.1, 3), class_balanced_fraction(LABELS, 0.1, 3)
    assert (a == b).all()
    assert set(a) <= set(class_balanced_fraction(LABELS, 0.5, 3))
    assert set(a) != set(class_balanced_fraction(LABELS, 0.1, 4))
    assert len(class_balanced_fraction(LABELS, 1.0, 0)) == len(LABELS)


def test_fraction_out_of_range_is_an_error():
    with pytest.raises(DataError, match="label fraction 1.5"):
        class_balanced_fraction(LABELS, 1.5, 0)


def test_class_subset_picks_k_classes_and_images_per_class():
    idx, classes = class_subset(LABELS, 3, class_seed=1, images_per_class=20, seed=0)
    assert len(classes) == 3 and classes == sorted(classes)
    counts = {c: int((LABELS[idx] == c).sum()) for c in classes}
    assert all(n == min(20, int((LABELS == c).sum())) for c, n in counts.items())
    assert set(LABELS[idx]) == set(classes)
    again = class_subset(LABELS, 3, class_seed=1, images_per_class=20, seed=0)
    assert (again[0] == idx).all() and again[1] == classes
    other_draws = {tuple(class_subset(LABELS, 3, class_seed=s)[1]) for s in range(6)}
    assert len(other_draws) > 1


def test_class_subset_all_images_and_label_map():
    idx, classes = class_subset(LABELS, 5, class_seed=0)
    assert len(idx) == len(LABELS) and classes == [0, 1, 2, 3, 4]
    _, classes = class_subset(LABELS, 2, class_seed=5)
    mapping = label_map(classes)
    assert sorted(mapping.values()) == [0, 1] and set(mapping) == set(classes)
    pos = positions_for_classes(LABELS, classes)
    assert set(LABELS[pos]) == set(classes)


def test_k_larger_than_classes_names_both_numbers():
    with pytest.raises(DataError, match=r"k=6 but the split has 5 classes"):
        class_subset(LABELS, 6, class_seed=0)


def test_class_subsets_of_one_draw_are_nested_and_each_seed_draws_its_own():
    labels = np.repeat(np.arange(20), 3)
    for seed, draw in ((0, 0), (0, 1), (3, 0)):
        subsets = [set(class_subset(labels, k, class_seed=draw, seed=seed)[1]) for k in (2, 5, 10, 20)]
        assert all(small < big for small, big in zip(subsets, subsets[1:])), (seed, draw)
        assert subsets[-1] == set(range(20))
    pairs = {
        (seed, draw): tuple(class_subset(labels, 5, class_seed=draw, seed=seed)[1])
        for seed in range(4)
        for draw in range(4)
    }
    assert len(set(pairs.values())) == len(pairs)  # 16 (seed, draw) pairs, 16 different 5-class subsets
