"""Evaluation on a held-out split: which samples (:class:`EvalSet`), the batches of them each rank reads, top-1/top-k
counts summed over ranks, and the accuracy metrics recorded in result.json.

Every protocol reads its samples through :func:`eval_batches` and embeds them through the same ``embed`` hook (a frozen
encoder's features, or the identity), so a feature-space protocol (kNN) needs only a new counting function here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from simclr_hpc import distributed as D
from simclr_hpc.data import augment, pipeline
from simclr_hpc.data.workers import fit_workers


@dataclass(frozen=True)
class EvalSet:
    """Which samples of which split an evaluation reads, and how their labels map to the model's classes."""

    split: str
    num_classes: int
    keys: list[str] | None = None
    """Only these sample keys (None: the whole split)."""
    label_map: dict[int, int] | None = None
    """Original label -> model class (None: labels are the classes)."""
    shards: str | None = None
    """The shard directory to read (None: ``data.shards``; a materialised label subset's own shards otherwise)."""


def eval_batches(ctx, evalset: EvalSet) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """``(x on the device, y on the CPU, keys)`` of this rank's share: every sample is read exactly once across ranks,
    un-augmented (centre view), ``train.eval_batch_per_device`` at a time."""
    cfg = ctx.cfg
    loader = pipeline.eval_loader(
        evalset.shards or cfg.data.shards,
        evalset.split,
        augment.EvalTransform(cfg.data.image_size),
        batch_per_device=cfg.train.eval_batch_per_device,
        rank=ctx.engine.rank,
        world_size=ctx.engine.world_size,
        num_workers=fit_workers(cfg.data.num_workers),
        keys=evalset.keys,
        label_map=evalset.label_map,
        on_error=cfg.data.on_error,
    )
    for batch in loader:
        yield batch["views"][0].to(ctx.device, non_blocking=True), batch["y"], list(batch["keys"])


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks: Sequence[int]) -> list[int]:
    """Samples whose true class is among the ``k`` highest logits, for each ``k`` in ``ks`` ([B, C] logits, [B] y).

    Top-1 is the argmax (the first of tied maxima), so it matches ``logits.argmax(1) == y`` exactly."""
    out = []
    for k in ks:
        if k == 1:
            hit = logits.argmax(1) == y
        else:
            hit = (logits.topk(min(k, logits.shape[1]), dim=1).indices == y[:, None]).any(1)
        out.append(int(hit.sum()))
    return out


def topk_counts(
    model: nn.Module,
    ctx,
    evalset: EvalSet,
    ks: Sequence[int] = (1,),
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[int], int]:
    """``(correct per k, total)`` on ``evalset`` over all ranks; logits are ``model(embed(x))`` (``embed``: a frozen
    feature extractor kept in its own mode, or None). ``model`` is in eval mode while counting, train mode after."""
    model.eval()
    counts = torch.zeros(len(ks) + 1, dtype=torch.float64)
    with torch.no_grad():
        for x, y, _ in eval_batches(ctx, evalset):
            with ctx.engine.autocast():
                logits = model(embed(x) if embed is not None else x).cpu()
            counts[: len(ks)] += torch.tensor(topk_correct(logits, y, ks), dtype=torch.float64)
            counts[-1] += len(y)
    D.all_reduce_sum(counts)
    model.train()
    return [int(c) for c in counts[: len(ks)]], int(counts[-1])


def accuracy_metrics(correct: int, total: int, num_classes: int) -> dict:
    """top-1 and chance-normalised top-1: (acc - 1/k) / (1 - 1/k), so 0 is chance and 1 is perfect at any k."""
    top1 = correct / max(1, total)
    chance = 1.0 / num_classes
    return {
        "top1": top1,
        "chance_norm_top1": (top1 - chance) / (1.0 - chance),
        "num_classes": num_classes,
        "eval_images": total,
    }


TOP5_ABOVE = 5
"""Top-5 is reported only with more classes than this (with 5 or fewer it is 100 % by construction)."""


def top1_metrics(model: nn.Module, ctx, evalset: EvalSet, embed=None) -> dict:
    """:func:`accuracy_metrics` of ``model`` on ``evalset`` (and ``top5`` above 5 classes): what every classifier
    stage reports."""
    ks = (1, 5) if evalset.num_classes > TOP5_ABOVE else (1,)
    correct, total = topk_counts(model, ctx, evalset, ks, embed)
    return _metrics(correct, total, evalset.num_classes)


def _metrics(correct: list[int], total: int, num_classes: int) -> dict:
    out = accuracy_metrics(correct[0], total, num_classes)
    if len(correct) > 1:
        out["top5"] = correct[1] / max(1, total)
    return out


def logits_metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """:func:`top1_metrics`'s numbers from logits already computed for the eval set ([N, C] logits, [N] y): this
    rank's share of it, the counts summed over ranks (a collective: every rank calls it, its share possibly empty)."""
    ks = (1, 5) if num_classes > TOP5_ABOVE else (1,)
    counts = torch.tensor([*topk_correct(logits, y, ks), len(y)], dtype=torch.float64)
    D.all_reduce_sum(counts)
    return _metrics([int(c) for c in counts[:-1]], int(counts[-1]), num_classes)


def local_features(
    ctx, evalset: EvalSet, embed: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [n, D] float32, labels [n])`` of this rank's share of ``evalset`` (a contiguous run of its
    samples), in key order, on the CPU. ``embed`` runs without gradients; only features are kept, never images."""
    keys, feats, labels = [], [], []
    with torch.no_grad():
        for x, y, batch_keys in eval_batches(ctx, evalset):
            with ctx.engine.autocast():
                feats.append(embed(x).float().cpu())
            keys += batch_keys
            labels.append(y)
    if not keys:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    order = sorted(range(len(keys)), key=keys.__getitem__)  # the loader's workers interleave their batches
    return torch.cat(feats)[order], torch.cat(labels).long()[order]


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's ``local`` rows (1-D [n_r] or 2-D [n_r, D]; n_r may differ and be 0) concatenated in rank order,
    on every rank (a collective).

    A tensor collective, never pickled objects: each rank writes its rows at its offset in a zero tensor of the total
    size and the ranks sum it (exact: every other term is 0), so the peak is the gathered tensor itself."""
    world, rank = D.world_size(), D.rank()
    shapes = torch.zeros(world, 2, dtype=torch.int64)
    shapes[rank] = torch.tensor([local.shape[0], local.shape[1] if local.dim() == 2 else 0])
    D.all_reduce_sum(shapes)
    sizes = shapes[:, 0].tolist()
    width = int(shapes[:, 1].max())  # an empty rank's [0, 0] takes the others' width
    out = torch.zeros(sum(sizes), *((width,) if local.dim() == 2 else ()), dtype=local.dtype)
    start = sum(sizes[:rank])
    if sizes[rank]:
        out[start : start + sizes[rank]] = local
    return D.all_reduce_sum(out)


def gather_features(
    ctx, evalset: EvalSet, embed: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D], labels [N])`` of every sample of ``evalset``, identical on every rank, in key order: each
    rank embeds its share (:func:`local_features`), then :func:`gather_rows` (a collective: every rank calls it)."""
    x, y = local_features(ctx, evalset, embed)
    return gather_rows(x), gather_rows(y)
