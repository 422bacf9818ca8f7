"""``train.compile=true`` with the real compiler (torch.compile's inductor, which runs on the CPU): a compiled pretrain
checkpoints, resumes exactly and exports a model a plain ResNet loads, and a compiled fine-tune loads that export.

Until issue 21 the model was wrapped by ``torch.compile(model)``, whose wrapper prefixes every state_dict key with
``_orig_mod.``: resume failed at ``load_state_dict`` and every later stage failed to load the export. The model is
tiny (ResNet-18 at 1/8 width, 16 px) and monitoring is off, so one forward-and-backward graph is compiled, and the
resumed run finds it in inductor's on-disk cache: about 40 s of compilation on a quiet 2-core machine.
"""

from __future__ import annotations

import json
import shutil

import torch
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.train import checkpoint as ckpt
from tests.conftest import tiny_overrides


def _run(stage: str, overrides: list[str]):
    args = ["run", stage] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_compiled_pretrain_resumes_exactly_and_its_export_loads_into_a_compiled_finetune(tiny_shards, tmp_path):
    base = tiny_overrides(tiny_shards, tmp_path, steps=4) + ["train.compile=true", "log.backends=[jsonl]"]
    _run("pretrain", base + ["run.name=p"])
    run_dir = tmp_path / "t" / "pretrain" / "p"
    root = run_dir / "checkpoints"
    whole = ckpt.load_state(root / "step-00000004")
    assert not [k for k in whole["model"] if "_orig_mod" in k]
    assert whole["export"].keys() == whole["model"].keys()

    # Rewind to the step-2 checkpoint (what a job killed right after it leaves) and run again: it resumes, compiled.
    shutil.rmtree(root / "step-00000004")
    (root / "latest").unlink()
    (root / "latest").symlink_to("step-00000002")
    (run_dir / "result.json").unlink()
    resumed = _run("pretrain", base + ["run.name=p"])
    assert "resuming" in resumed.output and "step-00000002" in resumed.output
    again = ckpt.load_state(root / "step-00000004")["model"]
    assert [k for k in whole["model"] if not torch.equal(whole["model"][k], again[k])] == []

    _run("finetune", base + ["run.name=f", f"finetune.encoder={run_dir}", "finetune.protocol=linear"])
    result = json.loads((tmp_path / "t" / "finetune" / "f" / "result.json").read_text())
    assert 0.0 <= result["metrics"]["top1"] <= 1.0
