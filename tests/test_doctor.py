"""``simclr-hpc doctor`` through the real app: warnings (with fixes) for what a login node lacks, failures for broken input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclr_hpc import doctor
from simclr_hpc.cli.main import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, ["doctor", *args])


def _line(output: str, status: str, name: str) -> str:
    """The report line with this status and check name (plain output: CliRunner is not a terminal)."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == status and parts[1] == name:
            return line
    raise AssertionError(f"no '{status} {name}' line in:\n{output}")


def _fake_bin(tmp_path: Path, scripts: dict[str, str]) -> Path:
    """A directory of tiny executables standing in for cluster commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _shard_dir(root: Path, shards: dict[str, bytes]) -> Path:
    """A shard directory in the layout of ``data/shards.py``: splits -> shards -> name, and the files themselves."""
    root.mkdir(parents=True)
    for name, content in shards.items():
        # A non-empty stand-in ends like a whole tar (block-aligned, then the two zero end-of-archive blocks).
        (root / name).write_bytes(content + bytes(-len(content) % 512) + bytes(1024) if content else content)
    index = {
        "classes": ["a", "b"],
        "splits": {
            "train": {"keys": ["train-0000000"], "labels": [0], "shards": [{"name": n, "count": 1} for n in shards]}
        },
    }
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture
def login_node(monkeypatch, tmp_path):
    """This process as seen on a GPU-less login node without Apptainer: whatever the machine running the tests has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    monkeypatch.delenv("SIMCLR_IMAGE", raising=False)
    monkeypatch.setenv("PATH", str(_fake_bin(tmp_path, {})))


def test_doctor_without_gpu_or_apptainer_warns_with_fixes_and_exits_0(login_node, tmp_path):
    result = _invoke("--offline", "--run-root", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "fix: run on a GPU node" in _line(result.output, "warn", "gpu")
    assert "fix: module load apptainer" in _line(result.output, "warn", "apptainer")
    assert "fix:" in _line(result.output, "warn", "slurm")
    _line(result.output, "ok", "torch")
    _line(result.output, "ok", "run")
    assert "0 fail" in result.output.splitlines()[-1]


@pytest.mark.parametrize("breakage", ["missing dir", "no index", "missing shard", "empty shard", "cut shard"])
def test_doctor_broken_data_root_fails_naming_the_root(login_node, tmp_path, breakage):
    root = tmp_path / f"shards-{breakage.replace(' ', '-')}"
    if breakage == "no index":
        root.mkdir()
    elif breakage == "missing shard":
        _shard_dir(root, {"train-000000.tar": b"x" * 10, "train-000001.tar": b"x"})
        (root / "train-000001.tar").unlink()
    elif breakage == "empty shard":
        _shard_dir(root, {"train-000000.tar": b""})
    elif breakage == "cut shard":  # issue 14: a copy that stopped early used to pass as ok
        _shard_dir(root, {"train-000000.tar": b"x" * 10, "train-000001.tar": b"x" * 600})
        whole = (root / "train-000001.tar").read_bytes()
        (root / "train-000001.tar").write_bytes(whole[:700])
    result = _invoke("--offline", "--data-root", str(root), "--run-root", str(tmp_path / "runs"))
    assert result.exit_code == 1, result.output
    line = _line(result.output, "fail", "data")
    assert str(root) in line and "fix:" in line
    if breakage in ("missing shard", "cut shard"):
        assert "train-000001.tar" in line and "train-000000.tar" not in line
    if breakage == "cut shard":
        assert "cut short" in line


def test_doctor_whole_data_root_is_ok_with_shard_count(login_node, tmp_path):
    root = _shard_dir(tmp_path / "shards", {"train-000000.tar": b"x" * 100, "test-000000.tar": b"y" * 100})
    result = _invoke("--offline", "--data-root", str(root), "--run-root", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "2 shards" in _line(result.output, "ok", "data")


def test_doctor_reads_the_index_that_write_shards_makes(tmp_path):
    from simclr_hpc.data.shards import write_shards

    index = write_shards("shapes:3", tmp_path / "shapes", shard_size=50, seed=0)
    checks = doctor.check_data_root(tmp_path / "shapes")
    assert [c.status for c in checks] == ["ok"], checks
    written = sorted(p.name for p in (tmp_path / "shapes").glob("*.tar"))
    assert f"{len(written)} shards" in checks[0].detail and len(written) >= 2, (index, written)


def test_doctor_missing_image_and_unwritable_run_root_fail(login_node, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = _invoke("--offline", "--image", str(tmp_path / "missing.sif"), "--run-root", str(not_a_dir / "runs"))
    assert result.exit_code == 1, result.output
    assert "missing.sif" in _line(result.output, "fail", "image")
    assert str(not_a_dir) in _line(result.output, "fail", "run")


def test_doctor_lists_partitions_and_asks_nothing_of_slurm_offline(login_node, tmp_path, monkeypatch):
    asked = tmp_path / "asked"
    bin_dir = _fake_bin(
        tmp_path,
        {
            "sbatch": "exit 0",
            "squeue": "exit 0",
            "sacct": f"echo sacct >> {asked}",
            "sinfo": f"echo sinfo >> {asked}; printf 'gpu*\\ndebug\\ngpu*\\n'",
        },
    )
    monkeypatch.setenv("PATH", str(bin_dir))
    online = _invoke("--run-root", str(tmp_path / "runs"))
    assert online.exit_code == 0, online.output
    assert "debug, gpu*" in _line(online.output, "ok", "partitions")
    _line(online.output, "ok", "accounting")
    assert asked.read_text().split() == ["sinfo", "sacct"]
    asked.unlink()
    offline = _invoke("--offline", "--run-root", str(tmp_path / "runs"))
    assert offline.exit_code == 0, offline.output
    _line(offline.output, "ok", "slurm")
    assert not asked.exists()


def test_doctor_inside_the_image_reports_the_container_not_a_missing_apptainer(login_node, monkeypatch):
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/simclr.sif")
    assert [(c.status, c.detail) for c in doctor.check_apptainer(None)] == [("ok", "running inside /images/simclr.sif")]


def test_doctor_command_module_imports_no_torch():
    code = "import sys, simclr_hpc.cli.doctor, simclr_hpc.doctor; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ)).returncode == 0
