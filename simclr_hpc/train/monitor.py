"""Online monitoring of SimCLR pretraining: kNN top-1 on held-out images and the embedding's contrastive properties.

Every ``pretrain.monitor_every_steps`` steps (and at the end) the encoder, in eval mode and without gradients, embeds

* a **feature bank**: ``pretrain.monitor_bank_images`` labelled training images (class-balanced, fixed);
* **queries**: ``pretrain.monitor_eval_images`` held-out images (class-balanced, fixed) of the validation split
  ``data.val_split``, never of the eval split the report scores (a study compares the monitor's kNN with the
  fine-tuned accuracy on that split: two accuracies on one test set would correlate by construction). Shards without
  a validation split (or whose ``val`` is their evaluation split, ImageNet's official val/) give training images
  outside the bank instead; ``monitor_split`` in result.json says which. Their weighted-kNN top-1 against the bank
  (``knn.py``, k = 20 and 200) is the classic label-free-training monitor;
* **pairs**: two fixed SimCLR views of ``pretrain.monitor_pairs`` of the queries, whose projections ``z`` give the
  alignment, uniformity, std and positive rank-1 of ``embedding.py`` (in the space the NT-Xent loss sees), and whose
  encoder outputs ``h`` give the same four as ``alignment_h``, ``uniformity_h``, ``embed_std_h``,
  ``positive_rank1_h`` (the space a linear probe reads: the head can make ``z`` uniform while ``h`` is not).

Every image is decoded and augmented once, at construction, with its own seeded generator: measuring touches no global
random state, so a run with monitoring trains exactly as one without. Every rank computes the same numbers (no
collectives: any engine, ZeRO-3 included, since all ranks run the same forwards); rank 0 logs them.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Callable

import numpy as np
import torch
from torch import nn

from simclr_hpc.config import Config, DataSection
from simclr_hpc.data import augment, pipeline, subsets
from simclr_hpc.data.shards import DatasetIndex, read_index
from simclr_hpc.train.embedding import contrastive_properties
from simclr_hpc.train.knn import knn_accuracy

MONITOR_SEED = 0
"""Seed of the fixed choice of bank, query and pair images (independent of ``run.seed``, so encoders compare)."""


def _balanced(labels: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """Sorted positions of about ``count`` of the ``candidates`` (positions into ``labels``), class-balanced, fixed."""
    fraction = min(1.0, count / max(1, len(candidates)))
    return candidates[subsets.class_balanced_fraction(labels[candidates], fraction, MONITOR_SEED)]


def monitor_splits(
    index: DatasetIndex, data: DataSection, bank_images: int, query_images: int
) -> tuple[list[str], str, list[str]]:
    """``(bank keys, query split, query keys)``: the bank from the training split; the queries from the validation
    split, or (without a usable one) from the training images outside the bank. Never the evaluation split."""
    train = index.splits[data.train_split]
    bank = _balanced(train.labels, np.arange(len(train.keys)), bank_images)
    val = data.val_split
    if val and val in index.splits and not index.is_evaluation(val):
        held_out = index.splits[val]
        queries = _balanced(held_out.labels, np.arange(len(held_out.keys)), query_images)
        return [train.keys[i] for i in bank], val, [held_out.keys[i] for i in queries]
    queries = _balanced(train.labels, np.setdiff1d(np.arange(len(train.keys)), bank), query_images)
    return [train.keys[i] for i in bank], data.train_split, [train.keys[i] for i in queries]


def _load(shards: str, split: str, keys: list[str], transform, batch: int, on_error: str) -> tuple[list, torch.Tensor]:
    """Every view of the ``keys`` (one tensor per view, in index order) and their labels."""
    # A DataLoader draws its base seed from torch's global generator: keep that draw from shifting the training RNG.
    with torch.random.fork_rng(devices=[]):
        batches = list(
            pipeline.eval_loader(shards, split, transform, batch_per_device=batch, keys=keys, on_error=on_error)
        )
    if not batches:
        raise ValueError(f"{shards}: split {split} has no images to monitor with")
    views = [torch.cat([b["views"][i] for b in batches]) for i in range(len(batches[0]["views"]))]
    return views, torch.cat([b["y"] for b in batches])


class PretrainMonitor:
    """Decodes the fixed monitoring images once; ``measure(model)`` returns the metrics of a SimCLRModel."""

    def __init__(self, cfg: Config, device: torch.device, autocast: Callable[[], AbstractContextManager]):
        p, d = cfg.pretrain, cfg.data
        self.device, self.autocast, self.batch = device, autocast, cfg.train.eval_batch_per_device
        index = read_index(d.shards)
        self.num_classes = index.num_classes
        eval_tf = augment.EvalTransform(d.image_size)
        bank_keys, self.query_split, query_keys = monitor_splits(index, d, p.monitor_bank_images, p.monitor_eval_images)
        (self.bank,), self.bank_labels = _load(d.shards, d.train_split, bank_keys, eval_tf, self.batch, d.on_error)
        (self.queries,), self.query_labels = _load(
            d.shards, self.query_split, query_keys, eval_tf, self.batch, d.on_error
        )
        views = augment.SimCLRViews(d.image_size, **augment.view_options(d))
        pair_keys = query_keys[:: max(1, len(query_keys) // max(1, p.monitor_pairs))][: p.monitor_pairs]
        (self.x_a, self.x_b), _ = _load(d.shards, self.query_split, pair_keys, views, self.batch, d.on_error)

    def _embed(self, fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(x), self.batch):
            with self.autocast():
                out.append(fn(x[start : start + self.batch].to(self.device)).float())
        return torch.cat(out)

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict:
        """kNN top-1/top-5 of the queries and the pairs' contrastive properties; ``monitor_s`` (wall) and
        ``monitor_cpu_s`` (this process's CPU time, steadier on a shared machine) are what it cost."""
        t0, c0 = time.perf_counter(), time.process_time()
        was_training = model.training
        model.eval()
        try:
            bank, queries = self._embed(model.encoder, self.bank), self._embed(model.encoder, self.queries)
            out = knn_accuracy(
                queries, self.query_labels.to(queries.device), bank, self.bank_labels.to(bank.device), self.num_classes
            )
            h_a, h_b = self._embed(model.encoder, self.x_a), self._embed(model.encoder, self.x_b)
            out.update(contrastive_properties(self._embed(model.head, h_a), self._embed(model.head, h_b)))
            out.update(contrastive_properties(h_a, h_b, suffix="_h"))
        finally:
            model.train(was_training)
        out["monitor_s"], out["monitor_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        return out
