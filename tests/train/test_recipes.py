"""Each stage's defaults are its recipe (simclr_hpc/recipes.py): what differs from pretraining, what the user's layers
still override, ``config show STAGE``, and a no-``-c`` linear transfer against the linear config."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_pretrain_defaults_are_the_field_defaults():
    assert load_config(stage="pretrain") == load_config()


@pytest.mark.parametrize("stage", ["finetune", "transfer"])
def test_linear_probe_defaults_differ_from_pretraining(stage):
    pre, probe = load_config(), load_config(stage=stage)
    assert pre.optim.name == "lars" and probe.optim.name == "adamw"
    assert probe.optim.lr_scaling == "none" and probe.optim.warmup_steps == 0
    assert probe.optim.base_lr < pre.optim.base_lr
    assert probe.train.steps > pre.train.steps  # a probe on precomputed features is cheap: enough steps to converge
    assert getattr(probe, stage).protocol == "linear"
    assert probe.model == pre.model and probe.data == pre.data  # the recipe is about training, not the architecture


@pytest.mark.parametrize("stage", ["finetune", "transfer"])
def test_full_protocol_selects_the_small_lr_fine_tuning_recipe(stage):
    full = load_config(overrides=[f"{stage}.protocol=full"], stage=stage)
    assert full.optim.name == "sgd" and full.optim.base_lr == 0.05 and full.optim.weight_decay == 0.0
    assert full.train.steps == load_config().train.steps  # the budget stays the user's


def test_protocol_from_the_users_file_selects_the_recipe(tmp_path):
    path = tmp_path / "full.yaml"
    path.write_text("finetune: {protocol: full}\n")
    assert load_config(path, stage="finetune").optim.name == "sgd"
    assert load_config(path, ["finetune.protocol=linear"], stage="finetune").optim.name == "adamw"


def test_distill_defaults_differ_from_pretraining():
    pre, dist = load_config(), load_config(stage="distill")
    assert dist.optim.name == "sgd" and pre.optim.name == "lars"
    assert dist.optim.warmup_steps < dist.train.steps


def test_users_file_and_overrides_beat_the_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim: {base_lr: 0.5}\n")
    cfg = load_config(path, ["train.steps=7"], stage="transfer")
    assert cfg.optim.base_lr == 0.5 and cfg.train.steps == 7 and cfg.optim.name == "adamw"


def test_config_show_stage_prints_the_stages_resolved_defaults():
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "transfer"])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output) == load_config(stage="transfer").model_dump(mode="json")
    plain = yaml.safe_load(runner.invoke(app, ["config", "show"]).output)
    assert plain["optim"]["name"] == "lars"
    bad = runner.invoke(app, ["config", "show", "pretrian"])
    assert bad.exit_code == 2 and "pretrian" in bad.output and "Traceback" not in bad.output


@pytest.fixture(scope="module")
def mnist_shards(tmp_path_factory):
    from simclr_hpc.data.shards import write_shards

    out = tmp_path_factory.mktemp("data") / "mnist5k"
    write_shards("mnist5k", out, shard_size=2500, seed=0)
    return out


def test_no_config_linear_transfer_equals_the_linear_config_within_1_point(mnist_shards, tmp_path):
    runner = CliRunner()
    common = [f"data.shards={mnist_shards}", f"run.root={tmp_path}", "data.image_size=16", "data.num_workers=0",
              "model.width=0.125", "transfer.encoder=random", "transfer.images_per_class=100",
              "train.eval_batch_per_device=500"]
    top1 = {}
    for name, config in (("recipe", []), ("linear", ["-c", str(REPO / "configs/transfer/linear.yaml")])):
        args = ["run", "transfer", *config] + [a for item in common + [f"run.name={name}"] for a in ("--set", item)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        line = next(line for line in result.stdout.splitlines() if line.startswith('{"run_dir"'))
        top1[name] = json.loads(line)["metrics"]["top1"]
    print("recipe figures:", top1)
    assert abs(top1["recipe"] - top1["linear"]) <= 0.01, top1
    assert top1["recipe"] > 0.3, top1  # a random encoder's probe on 10 digit classes is far above chance (10 %)


@pytest.mark.parametrize("stage", ["finetune", "transfer"])
def test_the_linear_config_files_spell_out_the_linear_recipe(stage):
    spelled = load_config(REPO / f"configs/{stage}/linear.yaml")
    recipe = load_config(stage=stage)
    assert spelled.optim == recipe.optim and spelled.train == recipe.train
