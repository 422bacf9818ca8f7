"""Which labelled images a fine-tuning or transfer run trains on and is scored on: a class-balanced label fraction, the
images a subset file lists, or k seeded classes (relabelled 0..k-1); the eval split's samples of those classes; and the
validation split a linear probe chooses its penalty on. Selections of keys over ``index.json`` (``data/subsets.py``
draws them); ``supervised.py`` trains and scores on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from simclr_hpc.config import TransferSection
from simclr_hpc.data import subsets
from simclr_hpc.data.index import DatasetIndex
from simclr_hpc.train.evaluate import EvalSet


@dataclass(frozen=True)
class LabelledSubset:
    """The labelled training keys of a run, its classes, and the eval split's samples of those classes."""

    train_keys: list[str]
    num_classes: int
    evalset: EvalSet
    label_map: dict[int, int] | None = None
    subset_file: str | None = None
    """The ``finetune.label_subset_file`` the keys were read from, if any."""
    subset_sha256: str | None = None
    """Its sha256: which list a published number was compared with."""

    def record(self) -> dict:
        """The subset.json content."""
        out = {"train_keys": self.train_keys, "label_map": self.label_map, "num_classes": self.num_classes}
        if self.subset_file:
            out.update(subset_file=self.subset_file, subset_sha256=self.subset_sha256)
        return out


def fraction_subset(
    index: DatasetIndex, train_split: str, eval_split: str, fraction: float, seed: int
) -> LabelledSubset:
    """A class-balanced ``fraction`` of the training split, every class, the whole eval split (fine-tuning)."""
    split = index.splits[train_split]
    indices = subsets.class_balanced_fraction(list(split.labels), fraction, seed)
    return LabelledSubset([split.keys[i] for i in indices], index.num_classes, EvalSet(eval_split, index.num_classes))


def file_subset(index: DatasetIndex, train_split: str, eval_split: str, path: str) -> LabelledSubset:
    """Exactly the training images a subset file lists (``finetune.label_subset_file``), the whole eval split."""
    split = index.splits[train_split]
    indices, digest = subsets.positions_from_file(path, split.keys, split.names)
    return LabelledSubset(
        [split.keys[i] for i in indices],
        index.num_classes,
        EvalSet(eval_split, index.num_classes),
        subset_file=str(path),
        subset_sha256=digest,
    )


def validation_set(index: DatasetIndex, split: str, evalset: EvalSet) -> EvalSet | None:
    """The ``split`` samples of ``evalset``'s classes, labelled alike (where a probe chooses its penalty); None when
    the shards have no such split, or when it is their evaluation split (ImageNet's val/ without a test/)."""
    if not split or split not in index.splits or index.is_evaluation(split):
        return None
    if evalset.label_map is None:
        return EvalSet(split, evalset.num_classes)
    held_out = index.splits[split]
    keys = [held_out.keys[i] for i in subsets.positions_for_classes(held_out.labels, list(evalset.label_map))]
    return EvalSet(split, evalset.num_classes, keys, evalset.label_map)


HOLDOUT_FRACTION = 0.2
"""Without a validation split, the share of the labelled images (class-balanced) a probe chooses its penalty on."""


def class_subset(
    index: DatasetIndex, train_split: str, eval_split: str, section: TransferSection, seed: int
) -> LabelledSubset:
    """k seeded classes, relabelled 0..k-1, ``images_per_class`` of each, and the eval samples of those classes."""
    split, held_out = index.splits[train_split], index.splits[eval_split]
    k = section.num_classes or index.num_classes
    indices, classes = subsets.class_subset(list(split.labels), k, section.class_seed, section.images_per_class, seed)
    label_map = subsets.label_map(classes)
    eval_keys = [held_out.keys[i] for i in subsets.positions_for_classes(held_out.labels, classes)]
    return LabelledSubset([split.keys[i] for i in indices], k, EvalSet(eval_split, k, eval_keys, label_map), label_map)
