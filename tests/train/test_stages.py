"""Every stage end to end from the CLI on a tiny config, and exact resume after interruptions."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.train import checkpoint as ckpt
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def _cli(stage, overrides):
    args = ["run", stage]
    for item in overrides:
        args += ["--set", item]
    return args


def _final_model(run_dir: Path) -> dict:
    return ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))["model"]


def test_all_four_stages_run_end_to_end_from_the_cli(tiny_shards, tmp_path):
    runner = CliRunner()
    base = tiny_overrides(tiny_shards, tmp_path)
    root = tmp_path / "t"
    steps = [
        ("pretrain", ["run.name=p"]),
        (
            "finetune",
            [
                "run.name=f",
                f"finetune.encoder={root}/pretrain/p",
                "finetune.label_fraction=0.5",
                "finetune.from_head_layer=1",
                "finetune.protocol=full",
            ],
        ),
        ("finetune", ["run.name=fl", f"finetune.encoder={root}/pretrain/p", "finetune.protocol=linear"]),
        (
            "distill",
            [
                "run.name=d",
                f"distill.teacher={root}/finetune/f",
                "model.backbone=resnet34",
                "distill.label_weight=0.3",
                "distill.label_fraction=0.5",
            ],
        ),
        ("distill", ["run.name=d0", "distill.label_weight=1.0"]),
        (
            "transfer",
            [
                "run.name=t",
                f"transfer.encoder={root}/pretrain/p",
                "transfer.num_classes=2",
                "transfer.images_per_class=10",
            ],
        ),
    ]
    for stage, extra in steps:
        result = runner.invoke(app, _cli(stage, base + extra))
        assert result.exit_code == 0, f"{stage} {extra}: {result.output}"
    results = {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/*/result.json")}
    assert set(results) == {"p", "f", "fl", "d", "d0", "t"}
    for name, res in results.items():
        solved = name in ("fl", "t")  # linear probes: solved in build (probe.py), no optimizer step
        assert res["steps"] == (0 if solved else 6) and res["world_size"] == 1 and res["device"] == "cpu"
        assert len(res["checkpoint_sha256"]) == 64
        assert (root / res["stage"] / name / "config.yaml").is_file()
        metrics = root / res["stage"] / name / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        assert [json.loads(line)["step"] for line in lines] == ([] if solved else list(range(1, 7)))
    from simclr_hpc.data.shards import read_index

    test_per_class = len(read_index(tiny_shards).split("test").keys) // 4
    assert results["t"]["metrics"]["num_classes"] == 2 and results["t"]["metrics"]["eval_images"] == 2 * test_per_class
    assert results["t"]["train_images"] == 20
    assert results["f"]["metrics"]["num_classes"] == 4
    assert results["d"]["metrics"]["teacher_top1"] == results["f"]["metrics"]["top1"]
    for name in ("f", "fl", "d", "d0", "t"):
        m = results[name]["metrics"]
        k = m["num_classes"]
        assert m["chance_norm_top1"] == pytest.approx((m["top1"] - 1 / k) / (1 - 1 / k))
    subset = json.loads((root / "finetune" / "f" / "subset.json").read_text())
    train_labels = read_index(tiny_shards).split("train").labels
    assert len(subset["train_keys"]) == len(train_labels) // 2  # half of every class's training images


def test_finished_run_is_not_redone(tiny_shards, tmp_path):
    runner = CliRunner()
    args = _cli("pretrain", tiny_overrides(tiny_shards, tmp_path, steps=2) + ["run.name=p"])
    assert runner.invoke(app, args).exit_code == 0
    result = tmp_path / "t" / "pretrain" / "p" / "result.json"
    before = result.stat().st_mtime_ns
    assert runner.invoke(app, args).exit_code == 0
    assert result.stat().st_mtime_ns == before


def test_changed_config_in_existing_run_dir_is_refused(tiny_shards, tmp_path):
    runner = CliRunner()
    base = tiny_overrides(tiny_shards, tmp_path, steps=2) + ["run.name=p"]
    (tmp_path / "t" / "pretrain" / "p").mkdir(parents=True)
    from simclr_hpc.config import dump_config, load_config

    (tmp_path / "t" / "pretrain" / "p" / "config.yaml").write_text(dump_config(load_config(overrides=base)))
    result = runner.invoke(app, _cli("pretrain", base + ["pretrain.temperature=0.2"]))
    assert result.exit_code == 2
    assert "different config" in result.output


def _start(args, tmp_path):
    cmd = [sys.executable, "-m", "simclr_hpc.cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_resume_after_sigkill_at_three_points_is_bitwise_exact(tiny_shards, tmp_path):
    """Kill the run after checkpoints 2, 4 and 6 (of 8 steps), resume each time; compare to an uninterrupted run."""
    base = tiny_overrides(tiny_shards, tmp_path, steps=8)
    whole = _start(_cli("pretrain", base + ["run.name=whole"]), tmp_path)
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    run_dir = tmp_path / "t" / "pretrain" / "cut"
    args = _cli("pretrain", base + ["run.name=cut"])
    resumed_from = []
    for kill_after in (2, 4, 6):
        proc = _start(args, tmp_path)
        target = run_dir / "checkpoints" / f"step-{kill_after:08d}"
        deadline = time.time() + 300
        while not (target / "COMPLETE").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = ckpt.latest_whole(run_dir / "checkpoints")
        resumed_from.append(ckpt.read_meta(latest)["step"])
        assert not (run_dir / "result.json").exists()
    final = _start(args, tmp_path)
    out = final.communicate(timeout=300)[0]
    assert final.returncode == 0, out
    assert resumed_from[0] >= 2 and resumed_from == sorted(resumed_from)
    a, b = _final_model(tmp_path / "t" / "pretrain" / "whole"), _final_model(run_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9)), "a step was logged twice or lost"
    whole_losses = [
        json.loads(line)["loss"] for line in (tmp_path / "t/pretrain/whole/metrics.jsonl").read_text().splitlines()
    ]
    cut_losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert whole_losses == cut_losses


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tiny_shards, tmp_path, monkeypatch):
    from simclr_hpc.train.stages import pretrain

    calls = {"n": 0}
    real = pretrain.nt_xent

    def nan_from_step_5(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(pretrain, "nt_xent", nan_from_step_5)
    args = _cli("pretrain", tiny_overrides(tiny_shards, tmp_path, steps=8) + ["run.name=nan"])
    result = CliRunner().invoke(app, args)
    run_dir = tmp_path / "t" / "pretrain" / "nan"
    assert result.exit_code == 1, result.output
    assert "loss is nan at step 5" in result.output and "step-00000004" in result.output
    assert not (run_dir / "result.json").exists()
    good = ckpt.latest_whole(run_dir / "checkpoints")
    assert good.name == "step-00000004"
    state = ckpt.load_state(good)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_pretrain_with_augmentation_on_the_device_trains_like_the_worker_path(tiny_shards, tmp_path):
    """data.device_augment moves colour/blur/normalisation from the loader workers to the training device (the GPU on
    a cluster, the CPU here): the same views as the per-image worker path, so the same per-step losses. (The worker
    path is per image here: the shards' images have one size, which would otherwise select the batched path.)"""
    losses = {}
    for name, on_device in (("workers", "false"), ("device", "true")):
        args = _cli(
            "pretrain",
            tiny_overrides(tiny_shards, tmp_path, steps=3)
            + [
                f"run.name={name}",
                f"data.device_augment={on_device}",
                "data.color_strength=1.0",
                "data.batch_augment=false",
            ],
        )
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        metrics = (tmp_path / "t" / "pretrain" / name / "metrics.jsonl").read_text().splitlines()
        losses[name] = [json.loads(line)["loss"] for line in metrics]
    assert len(losses["device"]) == 3
    assert losses["device"] == pytest.approx(losses["workers"], rel=1e-4)
