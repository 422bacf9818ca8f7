"""Batch dicts ``{"views", "y", "keys", "skipped"}`` from transformed samples, carrying the count of dropped samples."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from simclr_hpc.data.sources import DataError


class Batcher:
    """Collects transformed samples into batch dicts and carries the count of dropped samples into the next batch.

    Readers add to ``skipped`` for every sample they drop; the next batch reports that count and resets it.
    ``finish``: applied to the stacked views of each batch (``SimCLRBatchViews.finish_batch``), or None.
    ``collate_views``: makes a batch's ``views`` from its samples' (``DeviceDecodeViews.collate_views``: JPEG files of
    different lengths cannot be stacked), or None: each view stacked.
    """

    def __init__(
        self,
        batch_size: int,
        finish: Callable[..., tuple] | None = None,
        collate_views: Callable[[list], tuple] | None = None,
    ):
        self.batch_size, self.items, self.skipped, self.finish = batch_size, [], 0, finish
        self.collate_views = collate_views

    def add(self, views: tuple[torch.Tensor, ...], label: int, key: str) -> dict | None:
        """Add one sample; returns the batch it completes, else None."""
        self.items.append((views, label, key))
        return self.flush() if len(self.items) == self.batch_size else None

    def flush(self) -> dict | None:
        """The (possibly short) batch of the samples added since the last one, or None when there are none."""
        if not self.items:
            return None
        batch = self.collate(self.items)
        self.items = []
        return batch

    def collate(self, items: list) -> dict:
        """One batch dict from ``(views, label, key)`` items; takes the skipped count gathered since the last batch."""
        if self.collate_views is not None:
            views = self.collate_views([item[0] for item in items])
        else:
            views = tuple(torch.stack([item[0][v] for item in items]) for v in range(len(items[0][0])))
        batch = {
            "views": self.finish(*views) if self.finish is not None else views,
            "y": torch.tensor([item[1] for item in items], dtype=torch.long),
            "keys": [item[2] for item in items],
            "skipped": self.skipped,
        }
        self.skipped = 0
        return batch


def finite_batches(samples: Iterator[tuple], batcher: Batcher, nothing_read: str) -> Iterator[dict]:
    """Pipeline stage: ``(views, y, key)`` -> batches of a finite pass, the last one possibly short.

    webdataset's ``batched`` would lose samples skipped after the last batch; here one batch is held back so that they
    are still reported on a batch. Raises DataError(``nothing_read``) when not one sample was readable.
    """
    pending = None
    for views, y, key in samples:
        batch = batcher.add(views, y, key)
        if batch is not None:
            if pending is not None:
                yield pending
            pending = batch
    last = batcher.flush()
    if pending is None and last is None:
        raise DataError(nothing_read)
    if last is None:
        pending["skipped"] += batcher.skipped
    for batch in (pending, last):
        if batch is not None:
            yield batch
