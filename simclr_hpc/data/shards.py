# One module on purpose (over 300 lines): writing, verifying and inspecting the shard format share its layout rules.
"""WebDataset shards and their ``index.json``: write, verify, inspect (``index.py`` reads the index).

A shard directory holds ``<split>-NNNNNN.tar`` files (splits ``train``, ``val``, ``test``), each a plain tar in WebDataset
layout: per sample ``<key>.png`` (or ``.jpg``) and ``<key>.cls`` (the integer label as ASCII). Beside them, ``index.json``
records what a reader needs without opening a tar: class names, image size and channels, every split's sample keys and
labels in shard order (label fractions and class subsets are computed from it), per-shard counts and sha256, and a content
hash over all of it. ``index.json`` is written last, atomically: its presence means the directory is whole.

Tars are written by ``webdataset.TarWriter`` (members of a sample in sorted extension order: ``cls`` before the
image) with fixed metadata (mtime 0, uid/gid 0, empty user and group names, mode 0644), so the same source and seed give
byte-identical shards. They are read by webdataset's own stages (``url_opener`` -> ``tar_file_expander`` ->
``group_by_keys``) with a handler that records the first read error and stops the shard; ``iter_tar_samples`` turns it
into ``TruncatedShard`` naming the last whole key. One check stays ours: tarfile's stream mode (which webdataset uses)
ends quietly when a file is cut inside a header or exactly between members, and webdataset keeps the ``TarFile`` object
to itself, so its end offset cannot be compared with the file size. Instead a shard whose size is not a whole number of
512-byte blocks, or whose last two blocks are not the zero end-of-archive marker, counts as cut short (a cut file ends
in a member's data or header, never in two zero blocks: our members are PNG/JPEG files and ASCII labels).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from simclr_hpc import fsutil
from simclr_hpc.data.index import FORMAT, INDEX, DatasetIndex, read_index
from simclr_hpc.data.sources import UNLABELED, DataError, Source, Split, encode_image, open_source
from simclr_hpc.data.tarcheck import end_marker_missing
from simclr_hpc.outputs import check_output_dir, make_dir

SPLITS = ("train", "val", "test")
IMAGE_EXTS = ("png", "jpg")
CONTACT_SHEET = "contact_sheet.png"




def _stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of about ``fraction`` of each class (at least 1 of any class with 2+ samples), sorted."""
    taken = []
    for cls in np.unique(labels):
        pos = np.flatnonzero(labels == cls)
        n = int(round(len(pos) * fraction))
        n = min(max(n, 1 if len(pos) >= 2 else 0), len(pos) - 1)
        taken.append(rng.permutation(pos)[:n])
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)


def _tar_writer(path: Path) -> wds.TarWriter:
    """A TarWriter whose output depends only on the samples written (no clock, user or host in the headers)."""
    # encoder=False: samples arrive as bytes already (images are encoded by us, with fixed PNG/JPEG settings).
    return wds.TarWriter(str(path), user="", group="", mode=0o644, mtime=0, encoder=False)


def _content_hash(doc: dict) -> str:
    body = {k: doc[k] for k in ("classes", "image_size", "channels", "splits")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_shards(source: Source | str, out_dir: str | Path, val_fraction: float = 0.0, shard_size: int = 1000,
                 seed: int = 0, image_format: str = "auto", test_fraction: float = 0.2) -> DatasetIndex:
    """Write ``source`` (a Source or a spec for ``open_source``) as shards + ``index.json`` into ``out_dir``.

    ``val_fraction`` of train (stratified, seeded) becomes the ``val`` split; a source without a test split gets a
    stratified ``test_fraction`` of train as ``test``, unless it has its own val split (an ImageFolder's ``val/``): that
    one is then the evaluation split, and index.json's ``eval_split`` says so. Train and val are shuffled with ``seed``
    before sharding, so that every shard holds every class (a shuffle buffer cannot mix a shard of one class).
    ``image_format``: ``png`` (lossless), ``jpg`` (quality 95), or ``auto`` (png up to 128 px, jpg above; JPEG files of
    an ImageFolder are stored as they are when the format is jpg).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: must be >= 1")
    if image_format not in ("auto", *IMAGE_EXTS):
        raise DataError(f"--image-format {image_format!r}: use png, jpg or auto")
    out = check_output_dir(out_dir, "OUT_DIR")
    if (out / INDEX).exists() or any(out.glob("*.tar")):
        raise DataError(f"{out}: already holds shards; remove it or choose another output directory")
    if isinstance(source, str):
        source = open_source(source, seed=seed)
    if val_fraction > 0 and "val" in source.splits:
        raise DataError(f"--val-fraction {val_fraction}: {source.spec} has its own validation split (val/), which is "
                        f"kept as it is; leave --val-fraction at 0")
    created = [p for p in [out, *out.parents] if not p.exists()]
    try:
        return _write(source, out, val_fraction, shard_size, seed, image_format, test_fraction)
    except BaseException:
        # Nothing half-written stays behind (a bad image found halfway, an interrupt): the corrected retry starts clean.
        for part in out.glob("*.tar"):
            part.unlink()
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break
        raise


def carve_splits(source: Source, val_fraction: float, test_fraction: float,
                 seed: int) -> tuple[dict[str, Split], str]:
    """The splits to write, in the order their samples are written, and the name of the evaluation split.

    A source without a test split gets a stratified ``test_fraction`` of train as ``test``, unless it has its own val
    split (then that is the evaluation split); ``val_fraction`` of train becomes ``val``. Train and val are shuffled
    (seeded) so that every shard holds every class (a shuffle buffer cannot mix a shard of one class)."""
    rng = np.random.default_rng([seed, 2108])
    splits: dict[str, Split] = dict(source.splits)
    eval_split = "test"
    if "test" not in splits and "val" in splits:
        eval_split = "val"  # the source's own validation set (ImageNet's val/): the split results are reported on
    elif "test" not in splits and source.classes:  # unlabeled images only pretrain: nothing to evaluate on
        test_pos = _stratified_take(splits["train"].labels, test_fraction, rng)
        rest = np.setdiff1d(np.arange(len(splits["train"])), test_pos)
        splits["test"], splits["train"] = splits["train"].subset(test_pos), splits["train"].subset(rest)
    if val_fraction > 0:
        val_pos = _stratified_take(splits["train"].labels, val_fraction, rng)
        rest = np.setdiff1d(np.arange(len(splits["train"])), val_pos)
        splits["val"], splits["train"] = splits["train"].subset(val_pos), splits["train"].subset(rest)
    for name in ("train", "val"):
        if name in splits:
            splits[name] = splits[name].subset(rng.permutation(len(splits[name])))
    return {name: splits[name] for name in SPLITS if name in splits}, eval_split


def _write(source: Source, out: Path, val_fraction: float, shard_size: int, seed: int, image_format: str,
           test_fraction: float) -> DatasetIndex:
    splits, eval_split = carve_splits(source, val_fraction, test_fraction, seed)
    labelled = bool(source.classes)
    first = splits["train"].image(0)
    sizes, channels = set(), first.shape[2]
    if image_format == "auto":
        image_format = "png" if max(first.shape[:2]) <= 128 else "jpg"

    make_dir(out, "OUT_DIR")
    doc: dict = {"format": FORMAT, "source": source.spec, "classes": source.classes, "image_format": image_format,
                 "seed": seed, "val_fraction": val_fraction, "labelled": labelled, "eval_split": eval_split,
                 "splits": {}}
    for name in SPLITS:
        if name not in splits:
            continue
        split, keys, shards = splits[name], [], []
        for first_pos in range(0, len(split), shard_size):
            shard_name = f"{name}-{first_pos // shard_size:06d}.tar"
            positions = range(first_pos, min(first_pos + shard_size, len(split)))
            with _tar_writer(out / shard_name) as tar:
                for pos in positions:
                    key = f"{name}-{pos:07d}"
                    raw = split.encoded(pos)
                    if raw is not None and raw[1] == image_format and channels == 3:
                        data, ext = raw
                        from PIL import Image

                        with Image.open(io.BytesIO(data)) as img:
                            sizes.add((img.height, img.width))
                    else:
                        image = split.image(pos)
                        if image.shape[2] != channels:
                            image = np.repeat(image, 3, axis=2) if channels == 3 else image[..., :1]
                        sizes.add(image.shape[:2])
                        data, ext = encode_image(image, image_format), image_format
                    tar.write({"__key__": key, ext: data, "cls": str(int(split.labels[pos])).encode()})
                    keys.append(key)
            shards.append({"name": shard_name, "count": len(positions), "sha256": fsutil.sha256_file(out / shard_name)})
        doc["splits"][name] = {"keys": keys, "labels": [int(v) for v in split.labels], "shards": shards}
        if split.files is not None:  # so subset files that list images by file name can be used
            doc["splits"][name]["names"] = [f.name for f in split.files]
    doc["image_size"] = list(next(iter(sizes))) if len(sizes) == 1 else None
    doc["channels"] = int(channels)
    doc["content_hash"] = _content_hash(doc)
    fsutil.write_text_atomic(out / INDEX, json.dumps(doc, indent=1))
    return read_index(out)


class TruncatedShard(Exception):
    """A tar ended (or broke) in the middle: ``after`` is the last whole key read before it, or None."""

    def __init__(self, after: str | None, reason: str):
        super().__init__(reason)
        self.after = after


def _split_name(fname: str) -> tuple[str, str]:
    """``(key, extension)`` of a member name: the key is the base name up to its first dot (directories dropped)."""
    key, _, ext = fname.rsplit("/", 1)[-1].partition(".")
    return key, ext


def _read_error(exn: BaseException) -> str:
    """The reason of a read error without the stream and URL that webdataset appends to its arguments."""
    if isinstance(exn, OSError) and exn.strerror:
        return str(exn)  # "[Errno 2] No such file or directory: '<path>'" (the attributes, not the amended args)
    first = exn.args[0] if exn.args else ""
    text = str(first).split(" @ ", 1)[0].strip()
    return text or type(exn).__name__


def iter_tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` per sample, in file order. A broken tar raises TruncatedShard after the whole samples.

    A sample is whole once the next key starts (or the tar ends cleanly); the one being read when the tar breaks is lost.
    """
    path = Path(path)
    errors: list[BaseException] = []

    def stop_shard(exn: BaseException) -> bool:
        # webdataset's handler protocol: False stops the stream. The error is reported after the whole samples.
        errors.append(exn)
        return False

    ended: list[bool] = []

    def watch_end(files: Iterator[dict]) -> Iterator[dict]:
        for item in files:
            if not item:  # tar_file_expander's end-of-shard marker: the tar stream ended without an error
                ended.append(True)
            yield item

    urls = [{"url": str(path.absolute())}]
    files = tar_file_expander(url_opener(urls, handler=stop_shard), handler=stop_shard)
    last_whole, final = None, None
    # group_by_keys yields a sample when the next key starts (it is whole then), and once more when the stream stops:
    # after an error that last one is incomplete; after a quiet end it is whole only if the tar really ended.
    for sample in group_by_keys(watch_end(files), keys=_split_name, handler=stop_shard):
        if errors:
            break
        parts = {k: v for k, v in sample.items() if not k.startswith("__")}
        if ended:
            final = (sample["__key__"], parts)
            break
        yield sample["__key__"], parts
        last_whole = sample["__key__"]
    if not errors:
        try:
            reason = end_marker_missing(path)
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
        if reason is not None:
            raise TruncatedShard(last_whole, reason)
    if errors:
        raise TruncatedShard(last_whole, _read_error(errors[0]))
    if final is not None:
        yield final


def check_sample(key: str, parts: dict[str, bytes], num_classes: int) -> tuple[str | None, int | None]:
    """``(problem, label)`` of one sample: problem is None when the image decodes and the label is in range
    (``num_classes`` 0: shards of an unlabeled source, whose every label is ``UNLABELED``)."""
    from PIL import Image

    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if ext is None:
        return f"key {key}: no image (.png/.jpg) in sample (has {', '.join(sorted(parts)) or 'nothing'})", None
    try:
        with Image.open(io.BytesIO(parts[ext])) as img:
            img.load()
    except Exception as exc:  # PIL raises many types for corrupt data
        return f"key {key}: undecodable image ({type(exc).__name__}: {exc})", None
    if "cls" not in parts:
        return f"key {key}: missing label (.cls)", None
    try:
        label = int(parts["cls"].decode().strip())
    except (UnicodeDecodeError, ValueError):
        return f"key {key}: label {parts['cls'][:20]!r} is not an integer", None
    if num_classes == 0 and label != UNLABELED:
        return f"key {key}: label {label} in unlabeled shards (expected {UNLABELED})", None
    if num_classes and not 0 <= label < num_classes:
        return f"key {key}: label {label} outside 0..{num_classes - 1}", None
    return None, label


def verify(shards_dir: str | Path) -> list[str]:
    """Check every shard, image and label of a shard directory against its index; one line per problem (empty: clean).

    Finds: missing shard files, sha256 mismatches, truncated tars, undecodable images, missing or bad labels, keys or
    labels that differ from the index, and sample counts that differ from it. Each line names the shard and key.
    """
    index = read_index(shards_dir)
    problems = []
    for split_name, split in index.splits.items():
        for shard, start, stop in split.shard_ranges():
            path = index.root / shard.name
            if not path.is_file():
                problems.append(f"{shard.name}: shard file missing ({stop - start} samples of split {split_name})")
                continue
            if fsutil.sha256_file(path) != shard.sha256:
                problems.append(f"{shard.name}: sha256 differs from index.json (the file changed after it was written)")
            expected = dict(zip(split.keys[start:stop], split.labels[start:stop].tolist()))
            seen = 0
            try:
                for key, parts in iter_tar_samples(path):
                    seen += 1
                    problem, label = check_sample(key, parts, index.num_classes)
                    if problem:
                        problems.append(f"{shard.name}: {problem}")
                    elif key not in expected:
                        problems.append(f"{shard.name}: key {key}: not in index.json for this shard")
                    elif expected[key] != label:
                        problems.append(f"{shard.name}: key {key}: label {label} but index.json says {expected[key]}")
            except TruncatedShard as exc:
                where = f"after key {exc.after}" if exc.after else "at its start"
                problems.append(f"{shard.name}: truncated or corrupt tar {where} ({exc}); {seen} of {shard.count} "
                                f"samples readable; rebuild it with `simclr-hpc data shards`")
                continue
            if seen != shard.count:
                problems.append(f"{shard.name}: {seen} samples but index.json says {shard.count}")
    return problems


def inspect(shards_dir: str | Path, per_class: int = 8, tile: int = 64) -> dict:
    """Counts per split and class, and a contact sheet PNG (one row of ``per_class`` examples per class) in the directory.

    Returns ``{"counts": {split: {class_name: n}}, "contact_sheet": path, "classes": [...], "image_size": ...}``.
    """
    from PIL import Image, ImageDraw

    index = read_index(shards_dir)
    rows_of = list(enumerate(index.classes)) if index.labelled else [(UNLABELED, "(unlabeled)")]
    counts = {name: {cls: int((s.labels == k).sum()) for k, cls in rows_of} for name, s in index.splits.items()}
    examples: dict[int, list] = {k: [] for k, _ in rows_of}
    sheet_split = index.split("train") if "train" in index.splits else next(iter(index.splits.values()))
    for shard, _, _ in sheet_split.shard_ranges():
        try:
            for key, parts in iter_tar_samples(index.root / shard.name):
                problem, label = check_sample(key, parts, index.num_classes)
                if problem or len(examples[label]) >= per_class:
                    continue
                ext = next(e for e in IMAGE_EXTS if e in parts)
                img = Image.open(io.BytesIO(parts[ext])).convert("RGB")
                examples[label].append(img.resize((tile, tile), Image.BILINEAR))
        except TruncatedShard:
            pass
        if all(len(v) >= per_class for v in examples.values()):
            break
    label_w = 110
    sheet = Image.new("RGB", (label_w + per_class * (tile + 2), len(rows_of) * (tile + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, (k, cls) in enumerate(rows_of):
        y = row * (tile + 2)
        draw.text((4, y + tile // 2 - 6), f"{k}: {cls}"[:18], fill=(0, 0, 0))
        for j, img in enumerate(examples[k]):
            sheet.paste(img, (label_w + j * (tile + 2), y))
    path = index.root / CONTACT_SHEET
    sheet.save(path)
    return {"counts": counts, "contact_sheet": path, "classes": index.classes, "image_size": index.image_size}
