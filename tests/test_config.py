"""Config layering, strictness and one-line errors; every YAML under configs/ validates."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.config import STAGES, ConfigError, check_safe_name, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_file_holds_deltas_and_set_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 7}\nmodel: {backbone: resnet50}\n")
    cfg = load_config(path, ["train.steps=9", "optim.base_lr=0.5"])
    assert cfg.train.steps == 9 and cfg.model.backbone == "resnet50" and cfg.optim.base_lr == 0.5
    assert cfg.train.global_batch == 256  # untouched default


@pytest.mark.parametrize(
    "override,field",
    [
        ("train.global_batch=0", "train.global_batch"),
        ("finetune.label_fraction=1.5", "finetune.label_fraction"),
        ("pretrain.temperature=0", "pretrain.temperature"),
        ("model.backbone=vgg16", "model.backbone"),
        ("train.stepz=3", "train.stepz"),
        ("optim.name=adam", "optim.name"),
        ("run.name=../escape", "run.name"),
        ("train.steps=many", "train.steps"),
    ],
)
def test_bad_value_is_one_line_naming_the_dotted_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert len(err.value.lines) == 1 and err.value.lines[0].startswith(f"{field}:")


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="dist.zero_stage"):
        load_config(overrides=["dist.zero_stage=2"])
    # LARS maps ZeRO 1/2's flat partitions back to parameters (tests/test_distributed.py); ZeRO 3 is refused.
    load_config(overrides=["dist.engine=deepspeed", "dist.zero_stage=2"])
    with pytest.raises(ConfigError, match="optim.name: LARS .* ZeRO 3.*use dist.zero_stage 0, 1 or 2"):
        load_config(overrides=["dist.engine=deepspeed", "dist.zero_stage=3"])
    load_config(overrides=["dist.engine=deepspeed", "dist.zero_stage=3", "optim.name=adamw"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.steps"])
    assert parse_overrides(["a.b=true", "a.c=1e-3", "d=x"]) == {"a": {"b": True, "c": 1e-3}, "d": "x"}


@pytest.mark.parametrize("name", ["a/b", "..", "$(rm -rf ~)", "x;y", "a b", "`id`", "-rf", "x\ny", ""])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(ValueError):
        check_safe_name(name, "run.name")


def test_hash_ignores_key_order_and_run_root_but_not_content():
    a = load_config(overrides=["train.steps=5", "run.root=/abs/runs"])
    b = load_config(overrides=["run.root=runs", "train.steps=5"])
    c = load_config(overrides=["train.steps=6"])
    assert a.hash("pretrain") == b.hash("pretrain") != c.hash("pretrain")


def test_hash_of_a_stage_covers_its_own_section_and_not_the_other_stages():
    base = load_config()
    distill_changed = load_config(overrides=["distill.temperature=4.0"])
    pretrain_changed = load_config(overrides=["pretrain.temperature=0.2"])
    assert base.hash("pretrain") == distill_changed.hash("pretrain")
    assert base.hash("pretrain") != pretrain_changed.hash("pretrain")
    assert base.hash("distill") != distill_changed.hash("distill")
    assert base.hash("finetune") == distill_changed.hash("finetune") == pretrain_changed.hash("finetune")
    for shared in (
        "run.seed=3",
        "data.image_size=64",
        "model.width=0.5",
        "optim.base_lr=0.1",
        "train.steps=7",
        "dist.engine=deepspeed",
    ):
        changed = load_config(overrides=[shared])
        assert all(changed.hash(stage) != base.hash(stage) for stage in STAGES), shared
    assert len({base.hash(stage) for stage in STAGES}) == len(STAGES)


def test_every_stage_yaml_under_configs_validates():
    files = sorted(
        p
        for stage in ("pretrain", "finetune", "distill", "transfer")
        for p in (REPO / "configs" / stage).glob("*.yaml")
    )
    assert len(files) >= 6
    for path in files:
        load_config(path)


def test_config_cli_validate_and_show(tmp_path):
    runner = CliRunner()
    good = runner.invoke(app, ["config", "validate", str(REPO / "configs/pretrain/cifar10-resnet18.yaml")])
    assert good.exit_code == 0 and "1 config file(s) valid" in good.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {global_batch: 0, bogus: 1}\n")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and all(str(bad) in line for line in lines)
    shown = runner.invoke(app, ["config", "show", "--set", "train.steps=3"])
    assert shown.exit_code == 0 and "steps: 3" in shown.output
