"""Corrupt data in TRAINING, not just in the loader: ``simclr-hpc run pretrain`` on damaged shards.

Every train shard is damaged near its start (so whatever shard the resampled stream draws first is hit):
an undecodable image, a dropped label, or a shard cut in the middle of a member. ``data.on_error=raise`` must end the
process (non-zero exit, within a timeout: no hang) with one ``error:`` line naming the shard file and the sample key;
``data.on_error=skip`` must finish every step, with ``skipped_samples > 0`` in result.json and one metrics line per step.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.faults.helpers import cli, rewrite_shard, sets

STEPS = 6


def _keys(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return _keys_of(tar.getmembers())


def _second_key(tar_path: Path) -> str:
    return _keys(tar_path)[1]


def _undecodable(tar_path: Path) -> set[str]:
    key = _second_key(tar_path)
    rewrite_shard(tar_path, lambda name, data: b"\x89PNG\r\n\x1a\nthis is not a png" if name == f"{key}.png" else data)
    return {key}


def _no_label(tar_path: Path) -> set[str]:
    key = _second_key(tar_path)
    rewrite_shard(tar_path, lambda name, data: None if name == f"{key}.cls" else data)
    return {key}


def _truncated(tar_path: Path) -> set[str]:
    # Cut inside the 5th member's data (the third sample's image): every sample from there on is lost.
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    cut = members[4]
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: cut.offset_data + cut.size // 2])
    # The reader names the last sample it delivered (first) or the last whole one before the cut (second).
    return set(_keys_of(members)[:2])


def _keys_of(members) -> list[str]:
    return list(dict.fromkeys(m.name.split(".")[0] for m in members))


DAMAGE = {
    "undecodable_image": (_undecodable, "undecodable image"),
    "missing_label": (_no_label, "missing or unreadable label"),
    "truncated_shard": (_truncated, "truncated or corrupt tar"),
}


def _damaged_copy(tiny_shards: Path, tmp_path: Path, kind: str) -> tuple[Path, dict[str, set[str]]]:
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    damage = DAMAGE[kind][0]
    return shards, {p.name: damage(p) for p in sorted(shards.glob("train-*.tar"))}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_on_error_raise_stops_training_naming_shard_and_key(tiny_shards, tmp_path, kind):
    shards, damaged = _damaged_copy(tiny_shards, tmp_path, kind)
    args = tiny_overrides(shards, tmp_path / "runs", steps=STEPS) + ["run.name=r", "data.on_error=raise"]
    proc = cli("run", "pretrain", *sets(args), timeout=180)  # TimeoutExpired = a hang = failure
    assert proc.returncode != 0, proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    line = errors[0]
    shard = re.search(r"(train-\d{6}\.tar)", line)
    assert shard and shard.group(1) in damaged, line
    assert f"{shards}/{shard.group(1)}" in line, line
    assert "Traceback" not in proc.stderr
    run_dir = tmp_path / "runs/t/pretrain/r"
    assert not (run_dir / "result.json").exists()
    if "changed since it was built" in line:  # issue 24: a damaged shard's size disagrees with index.json: refused
        assert not run_dir.exists(), "refused before anything was written"  # before its config.yaml
        return
    assert DAMAGE[kind][1] in line, line
    named = set(re.findall(r"train-\d{7}", line))
    assert named and named <= damaged[shard.group(1)], (damaged, line)


def test_on_error_raise_names_shard_and_key_of_damage_that_keeps_the_shards_size(tiny_shards, tmp_path):
    """Damage index.json cannot see (an image's bytes garbled in place): found by the reader mid-run, named."""
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    tar_path = sorted(shards.glob("train-*.tar"))[0]
    key = _second_key(tar_path)
    with tarfile.open(tar_path) as tar:
        member = tar.getmember(f"{key}.png")
    with open(tar_path, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"\x89PNG\r\n\x1a\ngarbled" + bytes(member.size - 15))
    args = tiny_overrides(shards, tmp_path / "runs", steps=STEPS) + ["run.name=r", "data.on_error=raise"]
    proc = cli("run", "pretrain", *sets(args), timeout=180)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "undecodable image" in errors[0] and key in errors[0] and tar_path.name in errors[0], errors


@pytest.mark.slow  # a whole pretrain run plus its evaluation, in a fresh process: about 30 s on 2 busy cores
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_on_error_skip_completes_and_counts_skipped_samples_end_to_end(tiny_shards, tmp_path, kind):
    shards, _ = _damaged_copy(tiny_shards, tmp_path, kind)
    args = tiny_overrides(shards, tmp_path / "runs", steps=STEPS) + ["run.name=r", "data.on_error=skip"]
    proc = cli("run", "pretrain", *sets(args), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs/t/pretrain/r"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == STEPS
    assert result["skipped_samples"] > 0, result
    # ... and says so where the user looks, not only in result.json (issue 14)
    assert f"warning: {result['skipped_samples']} corrupt sample reads were skipped" in proc.stderr, proc.stderr[-2000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    assert all(m["loss"] == m["loss"] for m in lines)  # finite, not NaN
