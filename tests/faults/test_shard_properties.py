"""Property-based tests over the third file kind a user hands us: a shard directory, ``index.json`` with its tars.

A small real shard directory is built once; each generated case copies it and edits ``index.json`` (values replaced
by plausible or arbitrary JSON, keys dropped, shard names that point elsewhere, the text cut or garbled) and the tars
(cut, bytes flipped, garbage, members renamed to paths, made links, given non-integer labels or a bomb's header or a
declared size beyond the file, a shard replaced by a link outside, a FIFO, a directory). Then everything that reads
a shard directory reads it, as the commands do: ``read_index`` and ``check_shard_files`` (what ``run`` checks before
it writes anything), one evaluation pass over every split and a short training stream that skips damage (what a run
reads), ``verify`` (``data verify``) and ``inspect`` (``data inspect --out``). Each ends in an answer or in a
UserError whose every line is one short printable line (what the CLI prints after ``error:`` with exit 2), never
another exception, never a hang (an alarm fails the case), never more than a few seconds, never a write except the
named output, and never an answer read from outside the directory.

Library functions are called in this process (no CLI start per case); the command line itself is checked once on
generated damage. ``derandomize``: the same cases on every run; ``database=None``: nothing written to the repository.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import signal
import struct
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simclr_hpc.config import UserError
from tests.faults.helpers import cli_inprocess, tree
from tests.faults.test_properties import MAX_SECONDS, SETTINGS  # the same budget as the other file kinds'

HANG_SECONDS = 20  # an alarm ends a case that blocks (a FIFO opened, a stream that spins)


def _png_bomb() -> bytes:
    """A PNG header claiming 40000 x 40000 pixels (a few bytes that would decode to 4.8 GB), and an end marker."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


ELSEWHERE = ["../outside/x.tar", "/etc/passwd", "../outside", "/dev/zero", "nowhere.tar", "train-000000.tar", "."]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.integers(-(2**63), 2**64),
    st.sampled_from([10**30, 2**40, 1e400, -1e400, 0.5, 1.0, 3.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from([*ELSEWHERE, "train", "test", "val", "x.tar", ".x.tar", "a\nb.tar", "simclr-hpc-shards/1", ""]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()) -> list[tuple]:
    """Every path into the index document (lists: their first two items), deepest last."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def index_edits(draw, doc: dict) -> str:
    """``index.json``'s text after a few edits of its document, then maybe one of its text."""
    doc = copy.deepcopy(doc)
    paths = _paths(doc)
    for path in draw(st.lists(st.sampled_from(paths), max_size=3)):
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            kind = draw(st.integers(0, 9))
            if kind == 0 and isinstance(node, dict):
                node.pop(path[-1], None)
            elif kind <= 2 and isinstance(node, list) and node:
                node.append(copy.deepcopy(node[0]))  # a key, label or shard listed twice
            else:
                node[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit changed the path's way
    text = json.dumps(doc)
    cut = draw(st.integers(0, len(text)))
    return draw(
        st.sampled_from(
            [
                text,
                text,
                text,
                text[:cut],
                text[:-1] + ', "format": "simclr-hpc-shards/1"}',
                "[" * 5000 + "]" * 5000,
                text.replace("1", "1" * 40, 1),
            ]
        )
        | st.binary(max_size=30).map(lambda b: text + b.decode("latin-1"))
    )


@st.composite
def plausible_edits(draw, doc: dict) -> dict:
    """The index document with edits that keep it valid but make it disagree with its tars (or with itself): a label
    changed to another class, two shard names swapped, a size or channel count that is not the images', a shard's
    recorded size dropped, classes renamed or added, a key renamed."""
    doc = copy.deepcopy(doc)
    split = doc["splits"][draw(st.sampled_from(sorted(doc["splits"])))]
    for edit in draw(st.lists(st.integers(0, 6), min_size=1, max_size=3)):
        i = draw(st.integers(0, len(split["keys"]) - 1))
        if edit == 0:
            split["labels"][i] = (split["labels"][i] + draw(st.integers(1, 2))) % len(doc["classes"])
        elif edit == 1 and len(split["shards"]) > 1:
            first, second = split["shards"][0], split["shards"][-1]
            first["name"], second["name"] = second["name"], first["name"]
        elif edit == 2:
            doc["image_size"] = draw(st.sampled_from([None, [16, 16], [8, 9], [1, 1]]))
            doc["channels"] = draw(st.sampled_from([1, 3]))
        elif edit == 3:
            split["shards"][draw(st.integers(0, len(split["shards"]) - 1))].pop("bytes", None)
        elif edit == 4:
            doc["classes"] = [*doc["classes"], "extra"] if draw(st.booleans()) else ["x", "y", "z"]
        elif edit == 5:
            split["keys"][i] = draw(st.sampled_from(["renamed", split["keys"][0] + "x", "../k"]))
        elif edit == 6:
            doc["eval_split"] = draw(st.sampled_from(["val", "train", "nope"]))
    return doc


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write_members(path: Path, members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)


MEMBER_EDITS = st.sampled_from(
    [
        "path_name",
        "absolute_name",
        "hidden_name",
        "label_text",
        "label_negative",
        "label_huge",
        "label_empty",
        "label_binary",
        "image_garbage",
        "image_empty",
        "image_bomb",
        "drop",
        "duplicate",
        "symlink_member",
        "foreign_key",
    ]
)


def _edit_members(path: Path, edit: str, which: int) -> None:
    """Rewrite the tar at ``path`` with member ``which`` (mod the count) edited as ``edit`` says."""
    members = _members(path)
    i = which % len(members)
    name, data = members[i]
    key, _, ext = name.partition(".")
    labels = {"label_text": b"cat", "label_negative": b"-7", "label_huge": b"1099511627776", "label_empty": b"",
              "label_binary": b"\xff\xfe"}  # fmt: skip
    images = {"image_garbage": b"GIF89a not really", "image_empty": b"", "image_bomb": _png_bomb()}
    links: tuple[str, ...] = ()
    if edit in ("path_name", "absolute_name", "hidden_name"):
        members[i] = ({"path_name": "../", "absolute_name": "/tmp/", "hidden_name": "."}[edit] + name, data)
    elif edit in labels:
        members = [(n, labels[edit] if n.endswith(".cls") and n.startswith(key) else d) for n, d in members]
    elif edit in images:
        members = [(n, images[edit] if n.startswith(key) and not n.endswith(".cls") else d) for n, d in members]
    elif edit == "drop":
        del members[i]
    elif edit == "duplicate":
        members.insert(i, members[i])
    elif edit == "symlink_member":
        links = (f"{key}.png",)
        members = [(n, d) for n, d in members if not (n.startswith(key) and n.endswith(".png"))]
    elif edit == "foreign_key":
        members[i] = (f"zz-9999999.{ext}", data)
    _write_members(path, members, links)


def _huge_member(path: Path) -> None:
    """A tar whose first member (the index's first key) declares 8 GB in a file of a few KB."""
    name = _members(path)[0][0]
    info = tarfile.TarInfo(name)
    info.size = 8 * 10**9
    path.write_bytes(info.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 2048)


TAR_EDITS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("garbage"), st.binary(max_size=1500)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=1100)),
    st.tuples(st.just("members"), MEMBER_EDITS, st.integers(0, 50)),
    st.tuples(st.just("huge"), st.none()),
    st.tuples(st.just("delete"), st.none()),
    st.tuples(st.just("link"), st.sampled_from(ELSEWHERE)),
    st.just(("link", "../outside/x.tar")),  # a whole tar outside: the one a careless reader would read
    st.tuples(st.just("fifo"), st.none()),
    st.tuples(st.just("dir"), st.none()),
)


def _edit_tar(path: Path, edit: tuple) -> None:
    kind, *args = edit
    if not path.is_file() or path.is_symlink():
        return  # an earlier edit made it something else
    raw = path.read_bytes()
    if kind in ("members", "huge"):
        try:
            members = _members(path)
        except tarfile.TarError:
            members = []
        if not members:
            return  # an earlier edit left no tar to edit member by member
    if kind == "truncate":
        path.write_bytes(raw[: int(len(raw) * args[0])])
    elif kind == "flip" and raw:
        at = min(int(len(raw) * args[0]), len(raw) - 1)
        path.write_bytes(raw[:at] + bytes([raw[at] ^ args[1]]) + raw[at + 1 :])
    elif kind == "garbage":
        path.write_bytes(args[0])
    elif kind == "append":
        path.write_bytes(raw + args[0])
    elif kind == "members":
        _edit_members(path, args[0], args[1])
    elif kind == "huge":
        _huge_member(path)
    else:
        path.unlink()
        if kind == "link":
            path.symlink_to(args[0])
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict]:
    """The shard directory every case starts from, its index document, and a directory beside it that no reader may
    touch (``outside/``: a valid tar named by hostile shard names and links)."""
    from simclr_hpc.data.build import write_shards

    place = tmp_path_factory.mktemp("shard_properties")
    shards = place / "pristine"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    np.savez(place / "tiny.npz", x=x[:18], y=np.arange(18) % 3, x_test=x[18:], y_test=np.arange(6) % 3)
    write_shards(f"npz:{place / 'tiny.npz'}", shards, shard_size=6, seed=0, workers=1)
    (place / "outside").mkdir()
    shutil.copy(shards / "train-000000.tar", place / "outside" / "x.tar")
    return shards, json.loads((shards / "index.json").read_text())


_OPENED: dict = {"watching": None, "forbidden": []}
"""Files opened while a case's readers run that resolve to ``watching`` (the outside places); an audit hook fills it."""


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED["watching"] and isinstance(args[0], (str, bytes, os.PathLike)):
        real = os.path.realpath(os.fsdecode(args[0]))
        if any(real == place or real.startswith(place + os.sep) for place in _OPENED["watching"]):
            _OPENED["forbidden"].append(real)


sys.addaudithook(_audit)  # for the rest of the session: one dictionary look-up per open when no case runs


def _hung(signum, frame):
    raise AssertionError(f"a reader blocked for {HANG_SECONDS} s")


def _answer(fn):
    """``fn()``'s answer, or None after a UserError of short, one-line lines (asserted); within MAX_SECONDS."""
    start = time.monotonic()
    try:
        return fn()
    except UserError as err:
        assert err.lines, err
        for line in err.lines:
            assert isinstance(line, str) and line and "\n" not in line and "Traceback" not in line, line
            assert len(line) < 2000, line[:300]
        return None
    finally:
        assert time.monotonic() - start < MAX_SECONDS, fn


def _read_everything(shards: Path, sheet: Path) -> None:
    """What the commands do with a shard directory (see the module docstring)."""
    from simclr_hpc.data.augment import EvalTransform
    from simclr_hpc.data.pipeline import eval_loader, train_loader
    from simclr_hpc.data.shard_check import check_shard_files
    from simclr_hpc.data.shards import inspect, read_index, verify

    index = _answer(lambda: read_index(shards))
    if index is not None and _answer(lambda: check_shard_files(index, contents=True) or True):
        # a run starts: it reads every split once (evaluation), and trains on a stream that skips damage
        for split in index.splits:
            _answer(lambda split=split: list(eval_loader(shards, split, EvalTransform(8), batch_per_device=8)))
        if "train" in index.splits:
            _answer(
                lambda: list(
                    train_loader(
                        shards, "train", EvalTransform(8), batch_per_device=4, seed=0, total_steps=2, on_error="skip"
                    )  # fmt: skip
                )
            )
    problems = _answer(lambda: verify(shards))
    assert problems is None or all(isinstance(p, str) and "\n" not in p and len(p) < 2000 for p in problems)
    _answer(lambda: inspect(shards, per_class=2, tile=8, out=sheet, force=True))


@SETTINGS
@given(data=st.data())
def test_any_shard_directory_is_read_or_refused_in_lines_without_reaching_outside(data, base, tmp_path_factory):
    pristine, doc = base
    case = tmp_path_factory.mktemp("case")
    shards = case / "shards"
    shutil.copytree(pristine, shards, symlinks=True)
    (case / "outside").symlink_to(pristine.parent / "outside", target_is_directory=True)
    kind = data.draw(st.integers(0, 3))  # half the cases keep the index whole (their tars are read), a quarter
    if kind == 2:  # make it disagree with the tars in ways it stays valid, a quarter edit it anyhow
        (shards / "index.json").write_text(json.dumps(data.draw(plausible_edits(doc))))
    elif kind == 3:
        (shards / "index.json").write_bytes(data.draw(index_edits(doc)).encode("utf-8", "surrogateescape"))
    tars = sorted(p.name for p in pristine.glob("*.tar"))
    for name, edit in data.draw(st.lists(st.tuples(st.sampled_from(tars), TAR_EDITS), max_size=2)):
        _edit_tar(shards / name, edit)
    outside = pristine.parent / "outside"
    outside_before = {p.name: p.stat().st_mtime_ns for p in outside.iterdir()}
    before = tree(case)
    sheet = case / "sheet.png"
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(HANG_SECONDS)
    _OPENED.update(watching=[str(outside.resolve()), "/etc/passwd", "/dev/zero"], forbidden=[])
    try:
        _read_everything(shards, sheet)
    finally:
        _OPENED["watching"] = None
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not _OPENED["forbidden"], _OPENED["forbidden"]  # nothing read from outside the shard directory
    assert tree(case) - {"sheet.png"} == before  # nothing written but the named output
    assert {p.name: p.stat().st_mtime_ns for p in outside.iterdir()} == outside_before
    shutil.rmtree(case)


def test_the_command_line_refuses_generated_damage_in_one_line(base, tmp_path):
    """Generated damage through the real commands: exit 2 and one ``error:`` line each, nothing written. A shard name
    that leaves the directory and a shard that is a link outside (every command refuses to read it), a member that is
    a path (a run refuses before it writes; ``data inspect`` shows the other shards' images; ``data verify`` names it)."""
    pristine, doc = base
    cases = {}
    for name in ("elsewhere", "link", "member"):
        cases[name] = tmp_path / name
        shutil.copytree(pristine, cases[name])
    hostile = copy.deepcopy(doc)
    hostile["splits"]["train"]["shards"][0]["name"] = "../outside/x.tar"
    (cases["elsewhere"] / "index.json").write_text(json.dumps(hostile))
    (cases["link"] / "train-000001.tar").unlink()
    (cases["link"] / "train-000001.tar").symlink_to(pristine.parent / "outside" / "x.tar")
    _edit_members(cases["member"] / "train-000000.tar", "path_name", 0)
    sheet = tmp_path / "sheet.png"
    for name, shards in cases.items():
        before = tree(tmp_path)
        inspect_argv = ["data", "inspect", str(shards), "--out", str(sheet)]
        run_argv = ["run", "pretrain", "--set", f"data.shards={shards}", "--set", f"run.root={tmp_path / 'runs'}"]
        for argv in (run_argv, inspect_argv) if name != "member" else (run_argv,):
            result = cli_inprocess(*argv)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, result.output)
        verify = cli_inprocess("data", "verify", str(shards))
        assert verify.exit_code == (2 if name == "elsewhere" else 1) and "Traceback" not in verify.output, verify.output
        assert tree(tmp_path) == before, sorted(tree(tmp_path) ^ before)
    assert cli_inprocess(*inspect_argv).exit_code == 0 and tree(tmp_path) == before | {"sheet.png"}
