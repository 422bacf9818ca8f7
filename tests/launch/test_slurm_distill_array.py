"""Issue 3, item 2 with the real stages: a distill array of 4 teacher/student pairs (parallelism 2) after its pretrain job.

Teachers are fine-tuned in this process first (the array's inputs); on the cluster a pretrain job trains the ResNet-18
students' SimCLR initialisation, and the array (real ``run_stage("distill", ...)``) starts only after it (afterok).
"""

from __future__ import annotations

import json

import pytest

from simclr_hpc import launch
from simclr_hpc.config import load_config
from simclr_hpc.launch import LaunchRequest, Registry, registry_path, submit_array, submit_stage
from simclr_hpc.train.runner import run_stage
from tests.conftest import tiny_overrides
from tests.launch.helpers import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _job_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_real_distill_array_of_four_pairs_runs_after_its_pretrain_job(slurm_cluster, tmp_path, tiny_shards):
    root = tmp_path / "runs"
    base = tiny_overrides(tiny_shards, root, study="kd", steps=2)
    for backbone in ("resnet18", "resnet34"):
        short = backbone.removeprefix("resnet")
        run_stage("pretrain", load_config(None, base + [f"model.backbone={backbone}", f"run.name=p{short}"]))
        run_stage(
            "finetune",
            load_config(None, base + [f"run.name=t{short}", f"finetune.encoder={root}/kd/pretrain/p{short}"]),
        )

    request = LaunchRequest(profile="local", gpus_per_node=0)
    student_pre = submit_stage("pretrain", load_config(None, base + ["run.name=s18"]), request)
    pairs = [(t, s) for t in ("18", "34") for s in ("18", "34")]
    cfgs = [
        load_config(
            None,
            base
            + [
                f"run.name=t{t}-to-r{s}",
                f"distill.teacher={root}/kd/finetune/t{t}",
                f"model.backbone=resnet{s}",
                *([f"distill.student_init={root}/kd/pretrain/s18"] if s == "18" else []),
            ],
        )
        for t, s in pairs
    ]
    recs = submit_array("distill", cfgs, request, parallelism=2, dependency=[student_pre.job_id])
    script = recs[0].log_dir and (__import__("pathlib").Path(recs[0].log_dir) / f"{recs[0].array_job_id}_submission.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-3%2" in text and f"#SBATCH --dependency=afterok:{student_pre.job_id}" in text
    assert launch.wait(student_pre, poll_s=1, timeout_s=300) == "COMPLETED"
    assert [launch.wait(r, poll_s=1, timeout_s=400) for r in recs] == ["COMPLETED"] * 4
    states = {r.job_id: r.state for r in launch.refresh(Registry(registry_path(root, "kd")))}
    assert len(states) == 5 and set(states.values()) == {"COMPLETED"}, states
    for t, s in pairs:
        result = json.loads((root / "kd" / "distill" / f"t{t}-to-r{s}" / "result.json").read_text())
        teacher = json.loads((root / "kd" / "finetune" / f"t{t}" / "result.json").read_text())
        assert result["metrics"]["teacher_top1"] == teacher["metrics"]["top1"]
        assert result["metrics"]["teacher_backbone"] == f"resnet{t}"
        assert result["steps"] == 2 and 0.0 <= result["metrics"]["top1"] <= 1.0
