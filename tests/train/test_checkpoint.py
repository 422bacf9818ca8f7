"""Atomic checkpoints: kill mid-write, corrupt files, disk full, pickles with payloads."""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from simclr_hpc.train import checkpoint as ckpt


def _state(step):
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def test_latest_points_at_newest_and_old_ones_are_pruned(tmp_path):
    for step in (10, 20, 30):
        ckpt.save_checkpoint(tmp_path, step, _state(step), {"x": 1}, keep=2)
    assert (tmp_path / "latest").resolve().name == "step-00000030"
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000020", "step-00000030"]
    state = ckpt.load_state(ckpt.latest_whole(tmp_path))
    assert state["step"] == 30 and torch.equal(state["model"]["w"], torch.full((3,), 30.0))


def test_corrupt_checkpoint_is_refused_and_previous_one_used(tmp_path):
    ckpt.save_checkpoint(tmp_path, 10, _state(10), {}, keep=3)
    ckpt.save_checkpoint(tmp_path, 20, _state(20), {}, keep=3)
    with open(tmp_path / "step-00000020" / "state.pt", "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    assert "sha256" in ckpt.verify_checkpoint(tmp_path / "step-00000020")
    assert ckpt.latest_whole(tmp_path).name == "step-00000010"
    with pytest.raises(ckpt.CheckpointError, match="refusing checkpoint .*sha256"):
        ckpt.load_state(tmp_path / "step-00000020")


def test_sigkill_during_checkpoint_write_leaves_previous_whole(tmp_path):
    ckpt.save_checkpoint(tmp_path, 10, _state(10), {}, keep=3)
    # A child writes a large checkpoint and is SIGKILLed while torch.save is running.
    code = textwrap.dedent(f"""
        import os, signal, torch
        from simclr_hpc.train import checkpoint as ckpt
        real_save = torch.save
        def save_then_die(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save_then_die
        ckpt.save_checkpoint({str(tmp_path)!r}, 20, {{"w": torch.randn(1000, 1000)}}, {{}}, keep=3)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert (tmp_path / "latest").resolve().name == "step-00000010"
    assert not (tmp_path / "step-00000020").exists()
    assert ckpt.load_state(ckpt.latest_whole(tmp_path))["step"] == 10


def test_disk_full_is_reported_and_previous_state_intact(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 10, _state(10), {}, keep=3)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(ckpt.CheckpointError, match="No space left on device.*step-00000010 is intact"):
        ckpt.save_checkpoint(tmp_path, 20, _state(20), {}, keep=3)
    assert ckpt.latest_whole(tmp_path).name == "step-00000010"
    assert not list(tmp_path.glob(".tmp-*"))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/simclr-hpc-pwned",))


def test_pickle_with_payload_is_refused(tmp_path):
    if os.path.exists("/tmp/simclr-hpc-pwned"):
        os.remove("/tmp/simclr-hpc-pwned")
    ckpt.save_checkpoint(tmp_path, 10, _state(10), {}, keep=3)
    target = tmp_path / "step-00000010"
    torch.save({"model": _Payload()}, target / "state.pt", pickle_module=pickle)
    # Re-sign it so only the weights_only guard stands between the file and code execution.
    meta = ckpt.read_meta(target)
    meta["sha256"] = ckpt.sha256_file(target / "state.pt")
    (target / "meta.json").write_text(__import__("json").dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="weights_only"):
        ckpt.load_state(target)
    assert not os.path.exists("/tmp/simclr-hpc-pwned")
