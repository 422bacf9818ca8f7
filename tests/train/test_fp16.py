"""fp16 with dynamic loss scaling on CPU (autocast + GradScaler("cpu")): the loss stays finite and resume is exact."""

import json

import torch
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.train import checkpoint as ckpt
from tests.conftest import tiny_overrides


class _Interrupted(Exception):
    """Stands in for a job that ends in the middle of a segment."""


def _args(overrides):
    return ["run", "pretrain"] + [a for o in overrides for a in ("--set", o)]


def _final_state(run_dir):
    return ckpt.load_state(ckpt.latest_whole(run_dir / "checkpoints"))


def test_fp16_pretrain_on_cpu_stays_finite_and_resumes_exactly(tiny_shards, tmp_path, monkeypatch):
    from simclr_hpc.train.stages import pretrain as stage

    base = tiny_overrides(tiny_shards, tmp_path, steps=6) + ["train.precision=fp16"]
    whole = CliRunner().invoke(app, _args(base + ["run.name=whole"]))
    assert whole.exit_code == 0, whole.output
    real, calls = stage.nt_xent, {"n": 0}

    def stop_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Interrupted  # checkpoint 2 written, step 3 logged: the resumed run re-does step 3
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "nt_xent", stop_at_step_4)
    first = CliRunner().invoke(app, _args(base + ["run.name=cut"]))
    assert isinstance(first.exception, _Interrupted), first.output
    monkeypatch.setattr(stage, "nt_xent", real)
    second = CliRunner().invoke(app, _args(base + ["run.name=cut"]))
    assert second.exit_code == 0, second.output

    root = tmp_path / "t" / "pretrain"
    lines = {
        name: [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("whole", "cut")
    }
    assert all(torch.isfinite(torch.tensor(line["loss"])) for line in lines["whole"])
    assert [line["step"] for line in lines["cut"]] == list(range(1, 7))
    assert [line["loss"] for line in lines["cut"]] == [line["loss"] for line in lines["whole"]]
    a, b = _final_state(root / "whole"), _final_state(root / "cut")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), f"{name} differs after resume"
    assert a["amp"] == b["amp"] and a["amp"]["scaler"]["scale"] > 0
    result = json.loads((root / "cut" / "result.json").read_text())
    assert result["precision"] == "fp16" and result["amp_skipped_steps"] == a["amp"]["skipped"]
    assert all("amp_skipped" in line for line in lines["cut"])


def test_fp16_under_deepspeed_on_cpu_is_refused_in_one_line(tiny_shards, tmp_path):
    args = _args(
        tiny_overrides(tiny_shards, tmp_path, steps=1)
        + ["run.name=ds", "train.precision=fp16", "dist.engine=deepspeed", "optim.name=adamw"]
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "train.precision: fp16 under dist.engine=deepspeed needs a GPU" in result.output
