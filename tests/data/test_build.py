"""Shard builds in parallel and resumable: a killed build finishes with only what was missing, and verifies."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.data.build import build_range, finish, plan_build, start_build, write_shards
from simclr_hpc.data.shard_plan import BUILD_DIR, PARTIAL, load_plan
from simclr_hpc.data.shards import read_index, verify
from simclr_hpc.data.sources import DataError

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "shapes:4:40:16"  # 160 train + 80 test images: 24 shards of 10

_KILLED_HALF_WAY = textwrap.dedent("""
    import os, signal, sys
    from simclr_hpc.data.build import write_shards

    def kill_half_way(done, total):
        if done == total // 2:
            os.kill(os.getpid(), signal.SIGKILL)

    write_shards(sys.argv[1], sys.argv[2], shard_size=10, workers=2, progress=kill_half_way)
""")


def _stamps(out: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}


def test_a_killed_shard_build_resumes_writing_only_what_is_missing_and_the_result_verifies(tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_HALF_WAY, SOURCE, str(out)], cwd=ROOT, timeout=120, capture_output=True
    )
    assert killed.returncode == -9 and not (out / "index.json").exists()
    plan = load_plan(out)
    done_before = {s.name for s in plan.shards() if plan.done(s) is not None}
    assert len(plan.shards()) // 2 <= len(done_before) < len(plan.shards())
    kept = {name: stamp for name, stamp in _stamps(out).items() if name in done_before}

    index = write_shards(SOURCE, out, shard_size=10, workers=2)
    assert verify(out) == []
    assert {name: _stamps(out)[name] for name in kept} == kept  # finished shards were kept, not rewritten
    assert not (out / BUILD_DIR).exists() and not list(out.glob(f".*{PARTIAL}*"))
    whole = write_shards(SOURCE, tmp_path / "whole", shard_size=10, workers=1)  # one uninterrupted, in-process build
    assert index.content_hash == whole.content_hash
    for shard in whole.split("train").shards + whole.split("test").shards:
        assert (out / shard.name).read_bytes() == (tmp_path / "whole" / shard.name).read_bytes()


def _jpegs(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (150, 140, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    return root


def _damage_inside(path: Path) -> None:
    """Markers where pixels should be, inside the entropy-coded data: head and tail intact, only a decode fails."""
    data = bytearray(path.read_bytes())
    start = data.index(b"\xff\xda") + 20  # after the start of scan
    data[start : start + 400] = b"\xff" * 400
    path.write_bytes(bytes(data))


def test_a_cut_jpeg_is_refused_in_one_line_before_anything_is_written(tmp_path):
    src = _jpegs(tmp_path / "src")
    cut = src / "b" / "3.jpg"
    cut.write_bytes(cut.read_bytes()[:1000])  # header intact, end-of-image marker gone
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        write_shards(f"imagefolder:{src}", out, shard_size=2, workers=2)
    assert len(err.value.lines) == 1 and err.value.lines[0].startswith(f"{cut}: not a readable image (no end-of-image")
    assert not out.exists()


def test_a_jpeg_damaged_inside_fails_its_shard_alone_and_a_rerun_writes_only_that_shard(tmp_path):
    src = _jpegs(tmp_path / "src")
    bad = src / "b" / "3.jpg"
    good = bad.read_bytes()
    _damage_inside(bad)  # found only by decoding (--check full), while the shards are written
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        write_shards(f"imagefolder:{src}", out, shard_size=2, workers=2, check="full")
    assert any(line.startswith(f"{bad}: not a readable image") for line in err.value.lines)
    assert "the others are kept" in err.value.lines[-1]
    written = _stamps(out)
    assert len(written) == 5  # 12 images: 2 test (carved) + 10 train = 6 shards; one failed
    bad.write_bytes(good)
    index = write_shards(f"imagefolder:{src}", out, shard_size=2, workers=2, check="full")
    assert {name: _stamps(out)[name] for name in written} == written and verify(out) == []
    assert index.image_format == "jpg" and index.image_size == (150, 140)
    # stored as they are: the shard member is the source file itself
    assert read_index(out).split("train").names is not None


def test_a_build_that_kept_no_shard_leaves_no_trace(tmp_path):
    src = _jpegs(tmp_path / "src", per_class=3)
    for path in src.rglob("*.jpg"):
        _damage_inside(path)
    with pytest.raises(DataError, match="not a readable image"):
        write_shards(f"imagefolder:{src}", tmp_path / "out", shard_size=10, check="full")
    assert not (tmp_path / "out").exists()


def test_header_check_trusts_a_whole_looking_file_and_full_check_decodes_it(tmp_path):
    src = _jpegs(tmp_path / "src", per_class=3)
    _damage_inside(src / "a" / "1.jpg")
    with pytest.raises(DataError, match=r"1.jpg: not a readable image"):
        write_shards(f"imagefolder:{src}", tmp_path / "full", shard_size=10, check="full")
    write_shards(f"imagefolder:{src}", tmp_path / "header", shard_size=10)  # the header check lets it through ...
    assert any("undecodable image" in p for p in verify(tmp_path / "header"))  # ... and data verify finds it


def test_a_build_refuses_what_it_did_not_write_and_another_plan(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.tar").write_bytes(b"not ours")
    with pytest.raises(DataError, match="shards that this build did not write"):
        write_shards(SOURCE, foreign, shard_size=10)
    assert (foreign / "mine.tar").read_bytes() == b"not ours"
    out = tmp_path / "out"
    plan, _ = plan_build(SOURCE, out, shard_size=10)
    start_build(plan)
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(DataError, match="unfinished build of another source, source contents or settings"):
        write_shards(SOURCE, out, shard_size=10, seed=1)
    write_shards(SOURCE, out, shard_size=10)
    assert (out / "notes.txt").read_text() == "the user's"


def test_array_tasks_write_disjoint_ranges_and_the_last_job_writes_the_index(tmp_path):
    plan, _ = plan_build(SOURCE, tmp_path / "out", shard_size=10)
    start_build(plan)
    with pytest.raises(DataError, match="shard.s. not written"):
        finish(plan.root)
    assert [build_range(plan.root, task, 3) for task in range(3)] == [8, 8, 8]
    assert build_range(plan.root, 1, 3) == 0  # a task run again finds its shards done
    index = finish(plan.root)
    assert (
        verify(plan.root) == []
        and index.content_hash == json.loads((plan.root / "index.json").read_text())["content_hash"]
    )
