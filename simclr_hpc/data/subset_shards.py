"""A labelled subset as its own small shard set: a 1 % fine-tune then streams 1 % of the bytes, not all of them.

``materialise(shards_dir, split, keys, fallback)`` returns a shard directory whose ``train`` split holds exactly the
samples ``keys`` of ``split`` (same keys, labels and image bytes, copied member by member, never decoded), with its own
``index.json``. It is named by the subset's digest (the source's content hash, the split and the sorted keys), in
``<shards_dir>/_subsets/<digest>/`` when the dataset's directory is writable, else in ``fallback`` (the run root's
``_subsets/``), and built once: a later run with the same subset finds it. Two jobs that build it at once each write
a directory of their own and rename it into place; the loser's rename fails (the name is taken), and it removes its
own copy and uses the winner's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Sequence

from simclr_hpc.data.build import content_hash
from simclr_hpc.data.index import FORMAT, INDEX, has_index, read_index
from simclr_hpc.data.shard_writer import HashedTar
from simclr_hpc.data.shards import iter_tar_samples
from simclr_hpc.data.sources import DataError

SUBSETS = "_subsets"
SUBSET_SHARD_SIZE = 1000
WORTH_IT = 0.5
"""A subset is materialised when it holds less than this fraction of its split's samples."""


def subset_digest(content: str, split: str, keys: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([content, split, sorted(keys)]).encode()).hexdigest()[:24]


def materialise(shards_dir: str | Path, split: str, keys: Sequence[str], fallback: str | Path) -> Path:
    """The shard directory of ``keys`` of ``split`` (its ``train`` split), built if no run built it before."""
    index = read_index(shards_dir)
    digest = subset_digest(index.content_hash, split, keys)
    home = index.root / SUBSETS if os.access(index.root, os.W_OK) else Path(fallback) / SUBSETS
    final = home / digest
    if has_index(final):
        return final
    home.mkdir(parents=True, exist_ok=True)
    temp = home / f".{digest}.building-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)  # ours (this host and process): a leftover of an earlier attempt
    temp.mkdir()
    try:
        _write(index, split, set(keys), temp)
        try:
            os.rename(temp, final)
        except OSError:
            if not has_index(final):
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # only when the rename did not take it
    return final


def _write(index, split: str, keys: set[str], out: Path) -> None:
    """Copy the samples ``keys`` of ``split`` (in index order) into shards of ``out``, then its index.json."""
    source = index.split(split)
    wanted = [i for i, k in enumerate(source.keys) if k in keys]
    if len(wanted) != len(keys):
        raise DataError(f"{index.root}: {len(keys) - len(wanted)} subset key(s) are not in split {split}")
    shards, tar, count, f = [], None, 0, None
    wanted_set = set(wanted)
    for shard, start, stop in source.shard_ranges():
        if not any(p in wanted_set for p in range(start, stop)):
            continue  # only the shards that hold a wanted sample are read, once
        for key, parts in iter_tar_samples(index.root / shard.name):
            if key not in keys:
                continue
            if tar is None:
                name = f"train-{len(shards):06d}.tar"
                f = open(out / name, "wb")
                tar, count = HashedTar(f), 0
            for ext in sorted(parts):
                tar.add(f"{key}.{ext}", parts[ext])
            count += 1
            if count == SUBSET_SHARD_SIZE:
                shards.append(_close(f, tar, name, count))
                tar = None
    if tar is not None:
        shards.append(_close(f, tar, name, count))
    doc = {
        "format": FORMAT,
        "source": f"subset of {index.root} split {split}",
        "classes": index.classes,
        "image_format": index.image_format,
        "seed": index.seed,
        "val_fraction": 0.0,
        "labelled": index.labelled,
        "eval_split": index.eval_split,
        "image_size": list(index.image_size) if index.image_size else None,
        "channels": index.channels,
        "splits": {
            "train": {
                "keys": [source.keys[i] for i in wanted],
                "labels": [int(source.labels[i]) for i in wanted],
                "shards": shards,
            }
        },
    }
    if source.names is not None:
        doc["splits"]["train"]["names"] = [source.names[i] for i in wanted]
    doc["content_hash"] = content_hash(doc)
    (out / INDEX).write_text(json.dumps(doc))


def _close(f, tar: HashedTar, name: str, count: int) -> dict:
    tar.close()
    f.close()
    return {"name": name, "count": count, "sha256": tar.sha256.hexdigest(), "bytes": tar.size}
