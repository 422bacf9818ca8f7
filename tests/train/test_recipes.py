"""Each stage's defaults are its recipe (simclr_hpc/recipes.py): what differs from pretraining, what the user's layers
still override, ``config show STAGE``, and the linear config files against the (empty) linear recipe."""

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
def test_the_linear_probe_has_no_recipe_because_it_is_solved_not_trained(stage):
    pre, probe = load_config(), load_config(stage=stage)
    assert getattr(probe, stage).protocol == "linear"
    assert probe == pre  # no optimiser settings to recommend: probe.py solves it and reads neither optim nor steps


@pytest.mark.parametrize("stage", ["finetune", "transfer"])
def test_full_protocol_selects_the_small_lr_fine_tuning_recipe(stage):
    full = load_config(overrides=[f"{stage}.protocol=full"], stage=stage)
    assert full.optim.name == "sgd" and full.optim.base_lr == 0.05 and full.optim.weight_decay == 0.0
    assert full.train.steps == load_config().train.steps  # the budget stays the user's


def test_protocol_from_the_users_file_selects_the_recipe(tmp_path):
    path = tmp_path / "full.yaml"
    path.write_text("finetune: {protocol: full}\n")
    assert load_config(path, stage="finetune").optim.name == "sgd"
    assert load_config(path, ["finetune.protocol=linear"], stage="finetune").optim == load_config().optim


def test_distill_defaults_differ_from_pretraining():
    pre, dist = load_config(), load_config(stage="distill")
    assert dist.optim.name == "sgd" and pre.optim.name == "lars"
    assert dist.optim.warmup_steps < dist.train.steps


def test_users_file_and_overrides_beat_the_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim: {base_lr: 0.5}\n")
    cfg = load_config(path, ["train.steps=7"], stage="transfer")
    assert cfg.optim.base_lr == 0.5 and cfg.train.steps == 7
    full = load_config(path, ["train.steps=7", "transfer.protocol=full"], stage="transfer")
    assert full.optim.base_lr == 0.5 and full.train.steps == 7 and full.optim.name == "sgd"


def test_config_show_stage_prints_the_stages_resolved_defaults():
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "transfer"])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output) == load_config(stage="transfer").model_dump(mode="json")
    plain = yaml.safe_load(runner.invoke(app, ["config", "show"]).output)
    assert plain["optim"]["name"] == "lars"
    bad = runner.invoke(app, ["config", "show", "pretrian"])
    assert bad.exit_code == 2 and "pretrian" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("stage", ["finetune", "transfer"])
def test_the_linear_config_files_spell_out_the_linear_recipe(stage):
    spelled = load_config(REPO / f"configs/{stage}/linear.yaml")
    recipe = load_config(stage=stage)
    assert spelled.optim == recipe.optim and spelled.train == recipe.train
