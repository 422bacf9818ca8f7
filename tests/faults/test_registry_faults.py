"""A study's ``registry.sqlite`` that cannot be used: corrupt, truncated, a directory, written by a newer simclr-hpc,
locked past the wait, or on a read-only file system. Every command that reads or writes it (``jobs``, ``cancel``,
``submit``) says so in one line naming the file, exits 2, leaves the file as it was and submits nothing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from simclr_hpc.launch import registry as R
from tests.faults.helpers import (
    can_mount,
    cli_in_mounts,
    cli_inprocess,
    one_error_line,
    read_only,
)


def _registry(root: Path, state: str = "RUNNING") -> Path:
    run_dir = root / "s" / "pretrain" / "r"
    path = R.registry_path(root, "s")
    R.Registry(path).add(
        [
            R.JobRecord(
                study="s",
                stage="pretrain",
                run_name="r",
                job_id=str(2**22 + 17),
                executor="local",
                state=state,
                run_dir=str(run_dir),
                log_dir=str(run_dir),
                stdout="o",
                stderr="e",
                config_hash="0" * 16,
            )
        ]
    )
    return path


def _corrupt(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


def _newer(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE jobs ADD COLUMN gpu_hours REAL")
    con.execute("PRAGMA user_version = 7")
    con.commit()
    con.close()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGE = {
    "corrupt": (_corrupt, "corrupt"),
    "truncated": (_truncated, "corrupt or truncated"),
    "newer_schema": (_newer, "newer simclr-hpc"),
    "directory": (_directory, "is a directory"),
}


def _snapshot(path: Path):
    return sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("command", ["jobs", "cancel", "submit"])
def test_unusable_registry_is_one_line_naming_it_and_stays_as_it_was(kind, command, tmp_path, tiny_shards):
    damage, words = DAMAGE[kind]
    path = _registry(tmp_path / "runs")
    damage(path)
    before = _snapshot(path)
    argv = {
        "jobs": ["jobs", "--root", str(tmp_path / "runs")],
        "cancel": ["cancel", "--study", "s", "--root", str(tmp_path / "runs")],
        "submit": [
            "submit",
            "pretrain",
            "--executor",
            "local",
            "--set",
            f"run.root={tmp_path / 'runs'}",
            "--set",
            "run.study=s",
            "--set",
            "run.name=new",
            "--set",
            f"data.shards={tiny_shards}",
        ],
    }[command]
    result = cli_inprocess(*argv)
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    one_error_line(result.stderr, str(path), words)
    assert _snapshot(path) == before
    assert not (tmp_path / "runs" / "s" / "pretrain" / "new").exists()  # nothing submitted, nothing written


def test_registry_locked_past_the_wait_is_one_line_naming_it(tmp_path, monkeypatch):
    path = _registry(tmp_path / "runs")
    monkeypatch.setattr(R, "LOCK_WAIT_S", 0.5)
    holder = sqlite3.connect(f"file:{path}?vfs=unix-dotfile", uri=True)  # locks as every simclr-hpc process does
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        result = cli_inprocess("jobs", "--root", str(tmp_path / "runs"))
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, str(path), "locked")


@pytest.mark.skipif(not can_mount(), reason="needs a private mount namespace (root) for a read-only file system")
def test_registry_on_a_read_only_file_system_is_one_line_and_submits_nothing(tmp_path, tiny_shards):
    root = tmp_path / "runs"
    path = _registry(root)  # a RUNNING row: refreshing it needs a write
    proc = cli_in_mounts(read_only(root), "jobs", "--root", str(root))
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc.stderr, str(path), "read-only")
    proc = cli_in_mounts(
        read_only(root),
        "submit",
        "pretrain",
        "--executor",
        "local",
        "--set",
        f"run.root={root}",
        "--set",
        "run.study=s",
        "--set",
        "run.name=new",
        "--set",
        f"data.shards={tiny_shards}",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
