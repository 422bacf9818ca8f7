"""Atomic writes: a reader sees the old file or the whole new one; a failed write leaves the old one and no temp file."""

import os

import pytest

from simclr_hpc import fsutil


def test_atomic_json_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    fsutil.write_json_atomic(path, {"a": 1})
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(fsutil.AtomicWriteError, match="previous version is unchanged"):
        fsutil.write_json_atomic(path, {"a": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_text().strip().startswith("{") and '"a": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_path_removes_the_temp_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="writer failed"):
        with fsutil.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise ValueError("writer failed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_atomic_path_writes_by_any_means_and_replaces(tmp_path):
    path = tmp_path / "report.md"
    with fsutil.atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.md.tmp-")
        with tmp.open("w") as fh:
            fh.write("# new\n")
    assert path.read_text() == "# new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    data = os.urandom(3 * 1024 + 7)
    path.write_bytes(data)
    assert fsutil.sha256_file(path, chunk=1024) == hashlib.sha256(data).hexdigest()


def test_pid_alive_sees_this_process_and_not_a_reaped_child():
    import subprocess
    import sys

    assert fsutil.pid_alive(os.getpid()) and fsutil.pid_alive(str(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not fsutil.pid_alive(child.pid)
    assert not fsutil.pid_alive("job-12")
