"""``simclr-hpc data shards``: plan a shard build, write what is missing (in parallel, or as one Slurm array task's
share), and write ``index.json`` when every shard is done. ``shard_plan`` says what a plan holds and how a rerun
resumes; ``shard_writer`` how a shard is written; ``shards`` reads, verifies and inspects the result.

Layout of a finished directory: ``<split>-NNNNNN.tar`` (WebDataset: per sample ``<key>.png|jpg`` and ``<key>.cls``)
and ``index.json``: class names, image size and channels, every split's keys and labels in shard order, per-shard
counts, sizes and sha256, the evaluation split, and a content hash. ``index.json`` is written last, atomically: its
presence means the directory is whole.

Bad input is refused before anything is written (the settings, the source, the conflict with what OUT_DIR holds, and
every image file's head and tail: ``image_check``); a failure while writing (damage only a decode finds, a full disk,
a kill) keeps the finished shards for the rerun, and a failed build that kept none leaves OUT_DIR as it found it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from simclr_hpc import fsutil
from simclr_hpc.data.image_check import check_images
from simclr_hpc.data.index import FORMAT, INDEX, DatasetIndex, read_index
from simclr_hpc.data.shard_plan import BUILD_DIR, IMAGE_EXTS, BuildPlan, PlannedShard, carve_splits, load_plan
from simclr_hpc.data.shard_writer import Check, run_pending
from simclr_hpc.data.sources import DataError, Source, open_source
from simclr_hpc.outputs import check_output_dir, make_dir
from simclr_hpc.runlock import RunLock

CHECKS = ("header", "full")


def plan_build(
    source: Source | str,
    out_dir: str | Path,
    *,
    val_fraction: float = 0.0,
    shard_size: int = 1000,
    seed: int = 0,
    image_format: str = "auto",
    test_fraction: float = 0.2,
) -> tuple[BuildPlan, Source]:
    """Check the settings, open the source and decide every shard (nothing is written). See ``carve_splits`` for the
    splits; ``image_format``: ``png`` (lossless), ``jpg`` (quality 95, JPEG files stored as they are), or ``auto``
    (png up to 128 px, jpg above)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: must be >= 1")
    if image_format not in ("auto", *IMAGE_EXTS):
        raise DataError(f"--image-format {image_format!r}: use png, jpg or auto")
    out = check_output_dir(out_dir, "OUT_DIR")
    if (out / INDEX).exists():
        raise DataError(f"{out}: already holds shards (index.json); remove it or choose another output directory")
    if isinstance(source, str):
        source = open_source(source, seed=seed)
    if val_fraction > 0 and "val" in source.splits:
        raise DataError(
            f"--val-fraction {val_fraction}: {source.spec} has its own validation split (val/), which is "
            f"kept as it is; leave --val-fraction at 0"
        )
    splits, eval_split = carve_splits(source, val_fraction, test_fraction, seed)
    first = source.splits[splits["train"].origin].image(int(splits["train"].positions[0]))
    if image_format == "auto":
        image_format = "png" if max(first.shape[:2]) <= 128 else "jpg"
    # Channels: an array source's are its arrays'; a file source's are decided by its files, not by whichever image
    # the shuffle put first: planned as colour (grey images stored as they are, readers expand them), and index.json
    # says 1 only when every stored image was grey (finish()).
    channels = int(first.shape[2]) if source.splits[splits["train"].origin].files is None else 3
    plan = BuildPlan(
        out, source.spec, source.classes, image_format, channels, seed, val_fraction, shard_size, eval_split, splits
    )
    return plan, source


def pending_shards(plan: BuildPlan) -> tuple[list[PlannedShard], bool]:
    """The shards of ``plan`` still to write, and whether OUT_DIR holds this plan's unfinished build (False: none);
    a DataError when it holds another build or shards no build of ours wrote. Writes nothing."""
    try:
        saved = load_plan(plan.root) if (plan.root / BUILD_DIR).exists() else None
    except DataError:
        saved = None
    if saved is not None and saved.digest != plan.digest:
        raise DataError(
            f"{plan.root}: holds an unfinished build of another source, source contents or settings; "
            "run the same command as before to finish it, or choose another output directory"
        )
    if saved is None and any(plan.root.glob("*.tar")):
        raise DataError(
            f"{plan.root}: already holds shards that this build did not write; remove them or choose "
            "another output directory"
        )
    return [s for s in plan.shards() if plan.done(s) is None], saved is not None


def start_build(plan: BuildPlan) -> list[PlannedShard]:
    """Save ``plan`` in OUT_DIR, or check it is the plan of the unfinished build there; the shards still to write.
    Every image file of those shards is checked first (``image_check``): a bad one is refused with nothing written."""
    pending, resumed = pending_shards(plan)
    check_images(plan, pending)
    if not resumed:
        make_dir(plan.root, "OUT_DIR")
        plan.save()
    return pending


def write_shards(
    source: Source | str,
    out_dir: str | Path,
    *,
    val_fraction: float = 0.0,
    shard_size: int = 1000,
    seed: int = 0,
    image_format: str = "auto",
    test_fraction: float = 0.2,
    workers: int = 1,
    check: Check = "header",
    progress: Callable[[int, int], None] | None = None,
) -> DatasetIndex:
    """Write ``source`` (a Source or a spec for ``open_source``) as shards + ``index.json`` into ``out_dir`` with
    ``workers`` processes, resuming an interrupted build of the same plan (see the module docstrings)."""
    if check not in CHECKS:
        raise DataError(f"--check {check!r}: use header or full")
    plan, source = plan_build(
        source,
        out_dir,
        val_fraction=val_fraction,
        shard_size=shard_size,
        seed=seed,
        image_format=image_format,
        test_fraction=test_fraction,
    )
    # One build per directory at a time: a second `data shards` into it while one runs is refused naming the first
    # (two builds would both "succeed", one over the other). Slurm array tasks (build_range) share the plan instead.
    with RunLock(plan.root, what="OUT_DIR"):
        if (plan.root / INDEX).exists():
            raise DataError(
                f"{plan.root}: already holds shards (index.json); remove it or choose another output directory"
            )
        pending = start_build(plan)
        try:
            run_pending(plan, pending, source, check, workers, progress)
        except DataError:
            if not any(plan.done(s) for s in plan.shards()):  # nothing kept: leave OUT_DIR as it was found
                shutil.rmtree(plan.build_dir(), ignore_errors=True)
            raise
        return finish(plan.root)


def task_shards(plan: BuildPlan, task: int, tasks: int) -> list[PlannedShard]:
    """Array task ``task`` of ``tasks``: its contiguous range of the plan's shards."""
    shards = plan.shards()
    return shards[task * len(shards) // tasks : (task + 1) * len(shards) // tasks]


def build_range(out_dir: str | Path, task: int, tasks: int, *, workers: int = 1, check: Check = "header") -> int:
    """Write the missing shards of array task ``task`` of ``tasks`` of the plan saved in ``out_dir``; how many."""
    plan = load_plan(out_dir)
    pending = [s for s in task_shards(plan, task, tasks) if plan.done(s) is None]
    source = None
    if pending and any(plan.splits[s.split].files is None for s in pending):
        source = open_source(plan.source, seed=plan.seed)  # an array source: opened again (a file source is listed)
    run_pending(plan, pending, source, check, workers)
    return len(pending)


def finish(out_dir: str | Path) -> DatasetIndex:
    """Write ``index.json`` from the saved plan and the done records, then remove ``_build/``; a DataError saying
    what is missing when a shard is not done."""
    plan = load_plan(out_dir)
    records = {s.name: plan.done(s) for s in plan.shards()}
    missing = [name for name, r in records.items() if r is None]
    if missing:
        raise DataError(
            f"{plan.root}: {len(missing)} of {len(records)} shard(s) not written (e.g. {missing[0]}); "
            f"run the build again to write them"
        )
    sizes = {tuple(s) for r in records.values() for s in r["sizes"]}
    mixed = any(len(r["sizes"]) > 1 for r in records.values())
    doc: dict = {
        "format": FORMAT,
        "source": plan.source,
        "classes": plan.classes,
        "image_format": plan.image_format,
        "seed": plan.seed,
        "val_fraction": plan.val_fraction,
        "labelled": plan.labelled,
        "eval_split": plan.eval_split,
        "splits": {},
    }
    by_split: dict[str, list[dict]] = {}
    for shard in plan.shards():
        r = records[shard.name]
        by_split.setdefault(shard.split, []).append({k: r[k] for k in ("name", "count", "sha256", "bytes")})
    for name, split in plan.splits.items():
        doc["splits"][name] = {
            "keys": [f"{name}-{pos:07d}" for pos in range(len(split))],
            "labels": split.labels.tolist(),
            "shards": by_split[name],
        }
        if split.files is not None:  # so subset files that list images by file name can be used
            doc["splits"][name]["names"] = [os.path.basename(f) for f in split.files]
    doc["image_size"] = list(next(iter(sizes))) if len(sizes) == 1 and not mixed else None
    doc["channels"] = 3 if plan.channels == 3 and any(r.get("colour", True) for r in records.values()) else 1
    doc["content_hash"] = content_hash(doc)
    fsutil.write_text_atomic(plan.root / INDEX, json.dumps(doc, indent=1))
    shutil.rmtree(plan.build_dir())  # the build's own bookkeeping, no longer needed
    return read_index(plan.root)


def content_hash(doc: dict) -> str:
    """sha256 of what the samples are (classes, image size, channels, every split's keys, labels and shards)."""
    body = {k: doc[k] for k in ("classes", "image_size", "channels", "splits")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
