"""Tracking backends: what TensorBoard, W&B (offline) and MLflow (file store) hold after a run, and after a resume."""

import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclr_hpc import rundir
from simclr_hpc.cli.main import app
from simclr_hpc.train import checkpoint as ckpt
from tests.conftest import tiny_overrides

HAS_WANDB = importlib.util.find_spec("wandb") is not None
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


def _args(stage, overrides):
    args = ["run", stage]
    for item in overrides:
        args += ["--set", item]
    return args


def _jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in rundir.metrics_path(run_dir).read_text().splitlines()]


def _tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / rundir.TENSORBOARD))  # purges orphaned events, as TensorBoard does
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_history(run_dir: Path) -> tuple[list[dict], set[str]]:
    """Every history row of every offline W&B run file under the run directory (oldest first) and the run ids seen.

    The .wandb file is a LevelDB-style log (7-byte file header, 32 KiB blocks, records with a 7-byte header: crc32,
    length, type FULL/FIRST/MIDDLE/LAST) of protobuf ``Record`` messages; wandb ships the message classes only."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows, ids = [], set()
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, block, parts = path.read_bytes(), 7, 32768, b""
        assert data[:4] == b":W&B"
        records = []
        while pos + 7 <= len(data):
            left = block - pos % block
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if left < 7 or (length == 0 and kind == 0):
                pos += left
                continue
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            parts = chunk if kind in (1, 2) else parts + chunk
            if kind in (1, 4):
                records.append(parts)
        for raw in records:
            rec = pb.Record()
            rec.ParseFromString(raw)
            if rec.WhichOneof("record_type") == "run":
                ids.add(rec.run.run_id)
            elif rec.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
                )
    return rows, ids


def _assert_matches_jsonl(scalars: dict, lines: list[dict], steps: list[int]) -> None:
    for key in ("loss", "lr", "img_per_s"):
        logged = scalars[f"train/{key}"]
        assert [s for s, _ in logged] == steps, f"train/{key}: steps {[s for s, _ in logged]}"
        # TensorBoard stores float32: equal to the jsonl value to float32 precision.
        assert [v for _, v in logged] == pytest.approx([line[key] for line in lines], rel=1e-6)


def test_tensorboard_events_hold_the_steps_and_values_of_metrics_jsonl(tiny_shards, tmp_path):
    """A fine-tune that trains (protocol full: the linear protocol is solved by L-BFGS in build() and logs no step)."""
    base = tiny_overrides(tiny_shards, tmp_path, steps=4) + ["run.name=tb"]
    result = CliRunner().invoke(app, _args("finetune", base + ["finetune.encoder=random", "finetune.protocol=full"]))
    assert result.exit_code == 0, result.output
    run_dir = rundir.run_dir(tmp_path, "t", "finetune", "tb")
    lines = _jsonl(run_dir)
    scalars = _tensorboard_scalars(run_dir)
    _assert_matches_jsonl(scalars, lines, [1, 2, 3, 4])
    top1 = json.loads((run_dir / "result.json").read_text())["metrics"]["top1"]
    assert scalars["eval/top1"] == [(4, pytest.approx(top1))]


def _start(args, cwd):
    cmd = [sys.executable, "-m", "simclr_hpc.cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_run_sigkilled_after_a_checkpoint_and_resumed_logs_every_step_once(tiny_shards, tmp_path, monkeypatch):
    """Kill the run once it has logged a step past checkpoint 4 (of 8 steps), resume: TensorBoard (and MLflow when
    installed) hold steps 1..8 exactly once, with the values of metrics.jsonl."""
    backends = "[tensorboard,mlflow]" if HAS_MLFLOW else "[tensorboard]"
    args = _args(
        "pretrain", tiny_overrides(tiny_shards, tmp_path, steps=8) + ["run.name=cut", f"log.backends={backends}"]
    )
    run_dir = tmp_path / "t" / "pretrain" / "cut"
    proc = _start(args, tmp_path)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and any(line["step"] >= 5 for line in _jsonl(run_dir)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged_before = max(line["step"] for line in _jsonl(run_dir))
    resumed_from = ckpt.read_meta(ckpt.latest_whole(run_dir / "checkpoints"))["step"]
    assert resumed_from < logged_before < 8, "the kill must land after steps the resumed run re-does"

    final = _start(args, tmp_path)
    out = final.communicate(timeout=300)[0]
    assert final.returncode == 0, out
    lines = _jsonl(run_dir)
    assert [line["step"] for line in lines] == list(range(1, 9))
    _assert_matches_jsonl(_tensorboard_scalars(run_dir), lines, list(range(1, 9)))
    if HAS_MLFLOW:
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(rundir.mlflow_store(tmp_path, "t").resolve().as_uri())
        run_id = json.loads((run_dir / rundir.TRACKING).read_text())["mlflow_run_id"]
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
        assert [s for s, _ in history] == list(range(1, 9))
        assert [v for _, v in history] == pytest.approx([line["loss"] for line in lines], rel=1e-12)
        assert client.get_run(run_id).data.params["optim.base_lr"] == "0.3"
        assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


class _Interrupted(Exception):
    """Stands in for a job that ends in the middle of a segment."""


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'simclr-hpc[wandb]')")
def test_wandb_offline_run_is_continued_by_the_resumed_job_without_repeating_a_step(tiny_shards, tmp_path, monkeypatch):
    from simclr_hpc.train.stages import pretrain

    real, calls = pretrain.nt_xent, {"n": 0}

    def stop_at_step_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise _Interrupted  # steps 1..5 logged, checkpoint 4 written: the resumed job re-does step 5
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "nt_xent", stop_at_step_6)
    args = _args("pretrain", tiny_overrides(tiny_shards, tmp_path, steps=6) + ["run.name=wb", "log.backends=[wandb]"])
    first = CliRunner().invoke(app, args)
    assert isinstance(first.exception, _Interrupted), first.output
    monkeypatch.setattr(pretrain, "nt_xent", real)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output

    run_dir = tmp_path / "t" / "pretrain" / "wb"
    rows, ids = _wandb_history(run_dir)
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2
    assert ids == {json.loads((run_dir / rundir.TRACKING).read_text())["wandb_id"]}
    train_rows = [row for row in rows if "train/loss" in row]
    assert [row["_step"] for row in train_rows] == [1, 2, 3, 4, 5, 6]
    assert [row["train/loss"] for row in train_rows] == pytest.approx([line["loss"] for line in _jsonl(run_dir)])
    assert not (run_dir / rundir.TENSORBOARD).exists()


def test_backend_whose_package_is_missing_is_refused_in_one_line(tiny_shards, tmp_path, monkeypatch):
    from simclr_hpc.train import tracking

    monkeypatch.setitem(tracking.PACKAGES, "wandb", "no_such_package_for_simclr_hpc_tests")
    args = _args("pretrain", tiny_overrides(tiny_shards, tmp_path, steps=2) + ["run.name=x", "log.backends=[wandb]"])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: log.backends: wandb is requested but the no_such_package_for_simclr_hpc_tests package is not "
        "installed; pip install 'simclr-hpc[wandb]' or remove wandb from log.backends"
    ]
    assert not (tmp_path / "t").exists()


def test_jsonl_stays_on_whatever_log_backends_says():
    from simclr_hpc.config import load_config

    assert load_config(overrides=["log.backends=[tensorboard]"]).log.backends == ["jsonl", "tensorboard"]
    assert load_config(overrides=["log.backends=[]"]).log.backends == ["jsonl"]
    assert load_config().log.backends == ["jsonl", "tensorboard"]
