"""WebDataset shards and their ``index.json``: read, verify, inspect (``build`` writes them, ``index.py`` reads the index).

A shard directory holds ``<split>-NNNNNN.tar`` files (splits ``train``, ``val``, ``test``), each a plain tar in WebDataset
layout: per sample ``<key>.png`` (or ``.jpg``) and ``<key>.cls`` (the integer label as ASCII), and ``index.json``
(see ``build.py``). ``write_shards`` (``build.write_shards``) is re-exported here for the callers that build shards.

Tars are read by webdataset's own stages (``url_opener`` -> ``tar_file_expander`` -> ``group_by_keys``) with a handler
that records the first read error and stops the shard; ``iter_tar_samples`` turns it into ``TruncatedShard`` naming the
last whole key. One check stays ours: tarfile's stream mode (which webdataset uses) ends quietly when a file is cut
inside a header or exactly between members, and webdataset keeps the ``TarFile`` object to itself, so its end offset
cannot be compared with the file size. Instead a shard whose size is not a whole number of 512-byte blocks, or whose
last two blocks are not the zero end-of-archive marker, counts as cut short (a cut file ends in a member's data or
header, never in two zero blocks: our members are PNG/JPEG files and ASCII labels).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from simclr_hpc import fsutil
from simclr_hpc.data.build import write_shards
from simclr_hpc.data.index import DatasetIndex, read_index
from simclr_hpc.data.limits import not_regular, opened, to_uint8
from simclr_hpc.data.shard_check import link_outside, placement_problem
from simclr_hpc.data.shard_plan import IMAGE_EXTS, SPLITS
from simclr_hpc.data.sources import UNLABELED, DataError
from simclr_hpc.data.tarcheck import end_marker_missing
from simclr_hpc.outputs import OutputError, check_output_file

__all__ = [
    "IMAGE_EXTS",
    "SPLITS",
    "DatasetIndex",
    "TruncatedShard",
    "check_sample",
    "inspect",
    "iter_tar_samples",
    "read_index",
    "verify",
    "write_shards",
]
CONTACT_SHEET = "contact_sheet.png"


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
            elif "/" in item["fname"] or item["fname"].startswith("."):
                # our members are <key>.<ext>: a path (../x.png) is not one of ours, and never taken as its basename
                errors.append(ValueError(f"member {item['fname'][:80]!r} is a path, not a <key>.<ext> file name"))
                return
            yield item

    if why := not_regular(path):  # a FIFO would block the reader forever
        raise FileNotFoundError(why) if not path.exists() else TruncatedShard(None, why)
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
    # The label first: a bad label is named as one, not as an undecodable image.
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
    try:
        with Image.open(io.BytesIO(parts[ext])) as img:
            opened(img).load()  # a header claiming a bomb's size is refused before decoding
    except Exception as exc:  # PIL raises many types for corrupt data
        return f"key {key}: undecodable image ({type(exc).__name__}: {exc})", None
    return None, label


def verify(shards_dir: str | Path) -> list[str]:
    """Check every shard, image and label of a shard directory against its index; one line per problem (empty: clean).

    Finds: missing shard files, sha256 mismatches, truncated tars, undecodable images, missing or bad labels, keys or
    labels that differ from the index, and sample counts that differ from it. Each line names the shard and key.
    """
    index = read_index(shards_dir)
    root = index.root.resolve()
    problems = []
    for split_name, split in index.splits.items():
        for shard, start, stop in split.shard_ranges():
            path = index.root / shard.name
            if not path.exists() and not path.is_symlink():
                problems.append(f"{shard.name}: shard file missing ({stop - start} samples of split {split_name})")
                continue
            if why := placement_problem(path, root):  # never read: a FIFO would block, a link outside is not ours
                problems.append(f"{shard.name}: {why}; not read")
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
                problems.append(
                    f"{shard.name}: truncated or corrupt tar {where} ({exc}); {seen} of {shard.count} "
                    f"samples readable; rebuild it with `simclr-hpc data shards`"
                )
                continue
            if seen != shard.count:
                problems.append(f"{shard.name}: {seen} samples but index.json says {shard.count}")
    return problems


def inspect(
    shards_dir: str | Path, per_class: int = 8, tile: int = 64, out: str | Path | None = None, force: bool = False
) -> dict:
    """Counts per split and class, and a contact sheet PNG (one row of ``per_class`` examples per class) in the directory
    (or at ``out``: an existing file there is replaced only with ``force``; the directory's own sheet is always redone).

    Returns ``{"counts": {split: {class_name: n}}, "contact_sheet": path, "classes": [...], "image_size": ...}``.
    """
    from PIL import Image, ImageDraw

    index = read_index(shards_dir)
    for split in index.splits.values():  # the examples shown come from inside the directory, or none is shown
        for shard in split.shards:
            if why := link_outside(index.root / shard.name, index.root.resolve()):
                raise DataError(f"{index.root / shard.name}: {why}; replace it with the shard itself")
    path = Path(out) if out else index.root / CONTACT_SHEET
    try:  # before reading a shard: a read-only directory, a link or a device there is one line, not a traceback
        check_output_file(path, "--out" if out else "contact sheet", force=force or out is None)
    except OutputError as err:
        raise OutputError(err.lines[0] + ("" if out else "; or give --out FILE.png")) from None
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
                img = Image.fromarray(to_uint8(Image.open(io.BytesIO(parts[ext])), grey=False))
                examples[label].append(img.resize((tile, tile), Image.BILINEAR))
        except (TruncatedShard, FileNotFoundError):
            pass  # a damaged or missing shard gives no examples (``verify`` names it)
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
    with fsutil.atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return {"counts": counts, "contact_sheet": path, "classes": index.classes, "image_size": index.image_size}
