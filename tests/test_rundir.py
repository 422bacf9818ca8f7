"""The run directory's names and its typed result.json (torch-free)."""

import json
import subprocess
import sys

from simclr_hpc import rundir
from simclr_hpc.rundir import Result

RUNNER_KEYS = {  # what train/runner.py has always written at the top level of a fine-tune run's result.json
    "stage",
    "study",
    "run",
    "run_dir",
    "config_hash",
    "seed",
    "steps",
    "global_batch",
    "per_device_batch",
    "accumulation",
    "metrics",
    "wall_s",
    "images_per_s",
    "skipped_samples",
    "device",
    "world_size",
    "hostnames",
    "checkpoint_sha256",
    "finished_at",
    "train_images",
    "num_classes",
}


def _finetune_result(run_dir) -> Result:
    metrics = {"top1": 0.5, "chance_norm_top1": 1 / 3, "num_classes": 4, "eval_images": 80, "loss": 1.2}
    return Result(
        stage="finetune",
        run="f",
        metrics=metrics,
        study="s",
        run_dir=str(run_dir),
        config_hash="ab" * 8,
        seed=0,
        steps=6,
        global_batch=16,
        per_device_batch=16,
        accumulation=1,
        wall_s=2.0,
        images_per_s=100.0,
        skipped_samples=0,
        device="cpu",
        world_size=1,
        hostnames=["vm"],
        checkpoint_sha256="0" * 64,
        finished_at="2026-12-01T10:00:00+00:00",
        num_classes=4,
        train_images=80,
    )


def test_result_writes_the_runners_keys_and_reads_back_equal(tmp_path):
    result = _finetune_result(tmp_path)
    path = result.write(tmp_path)
    assert path == tmp_path / "result.json" and rundir.is_finished(tmp_path)
    data = json.loads(path.read_text())
    assert set(data) == RUNNER_KEYS and data["metrics"]["top1"] == 0.5
    assert Result.read(tmp_path) == result and Result.read(tmp_path).top1 == 0.5


def test_a_partial_result_with_unknown_keys_round_trips(tmp_path):
    data = {"stage": "pretrain", "run": "p", "metrics": {"loss": 1.0}, "config_hash": "h", "note": "from elsewhere"}
    result = Result.from_json(data)
    assert result.extra == {"note": "from elsewhere"} and result.steps is None
    assert result.to_json() == data


def test_missing_or_corrupt_result_reads_as_none(tmp_path):
    assert Result.read(tmp_path) is None and not rundir.is_finished(tmp_path)
    (tmp_path / "result.json").write_text('{"stage": "pre')
    assert Result.read(tmp_path) is None
    (tmp_path / "result.json").write_text("[1, 2]")
    assert Result.read(tmp_path) is None


def test_run_directory_names_are_spelled_here():
    assert rundir.config_path("r").as_posix() == "r/config.yaml"
    assert rundir.metrics_path("r").as_posix() == "r/metrics.jsonl"
    assert rundir.checkpoints_dir("r").as_posix() == "r/checkpoints"
    assert rundir.subset_path("r").as_posix() == "r/subset.json"
    assert rundir.result_path("r").as_posix() == "r/result.json"


def test_rundir_imports_no_torch():
    code = "import sys, simclr_hpc.rundir; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
