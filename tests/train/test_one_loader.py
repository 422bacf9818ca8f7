"""One training loader per run: built once across checkpoint segments, and a resumed run still bitwise exact."""

import pytest

from simclr_hpc.config import load_config
from simclr_hpc.data import pipeline
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.runner import run_stage
from simclr_hpc.train.stages import PretrainTask
from tests.conftest import tiny_overrides


def test_a_pretrain_run_of_three_segments_builds_its_loader_once_and_resumes_bitwise(
    tiny_shards, tmp_path, monkeypatch
):
    built = []
    real = pipeline.train_loader
    monkeypatch.setattr(pipeline, "train_loader", lambda *a, **k: (built.append(k["first_segment"]), real(*a, **k))[1])

    def run(name):
        cfg = load_config(
            overrides=[*tiny_overrides(tiny_shards, tmp_path, steps=6), f"run.name={name}", "data.num_workers=2"],
            stage="pretrain",
        )
        return run_stage("pretrain", cfg), cfg.run_dir("pretrain")

    _, whole = run("whole")  # checkpoints every 2 steps: segments 0, 1, 2
    assert built == [0]
    built.clear()
    real_step, steps = PretrainTask.step, []

    def dies_in_step_5(self, model, batch):
        steps.append(1)
        if len(steps) == 5:
            raise KeyboardInterrupt("killed after the checkpoint of step 4")
        return real_step(self, model, batch)

    monkeypatch.setattr(PretrainTask, "step", dies_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        run("cut")
    monkeypatch.setattr(PretrainTask, "step", real_step)
    result, cut = run("cut")  # resumed from step 4: its one loader starts at segment 2
    assert built == [0, 2] and result["steps"] == 6
    a, b = (ckpt.load_state(ckpt.latest_whole(d / "checkpoints"))["model"] for d in (whole, cut))
    assert all(bool((a[k] == b[k]).all()) for k in a)
