"""The run directory a runner prepares: config.yaml, and which config changes refuse a resume."""

import pytest

from simclr_hpc import rundir
from simclr_hpc.config import ConfigError, dump_config, load_config
from simclr_hpc.train.runner import prepare_run_dir


def _started(tmp_path, overrides):
    cfg = load_config(overrides=[f"run.root={tmp_path}", "run.name=p", *overrides])
    run_dir = cfg.run_dir("pretrain")
    run_dir.mkdir(parents=True)
    rundir.config_path(run_dir).write_text(dump_config(cfg))
    return cfg


def test_changing_another_stages_section_does_not_refuse_a_pretrain_resume(tmp_path):
    """The defect: Config.hash() covered every stage's section, so a new distill default refused pretrain resumes."""
    _started(tmp_path, ["distill.temperature=1.0", "finetune.label_fraction=1.0"])
    later = load_config(
        overrides=[f"run.root={tmp_path}", "run.name=p", "distill.temperature=4.0", "finetune.label_fraction=0.1"]
    )
    prepare_run_dir("pretrain", later)  # no error: pretrain reads neither section


def test_changing_the_stages_own_section_refuses_the_resume(tmp_path):
    _started(tmp_path, [])
    later = load_config(overrides=[f"run.root={tmp_path}", "run.name=p", "pretrain.temperature=0.2"])
    with pytest.raises(ConfigError, match="run.name: .* was started with a different config"):
        prepare_run_dir("pretrain", later)


def test_a_new_run_dir_gets_its_config_yaml(tmp_path):
    cfg = load_config(overrides=[f"run.root={tmp_path}", "run.name=new"])
    prepare_run_dir("finetune", cfg)
    written = load_config(rundir.config_path(cfg.run_dir("finetune")))
    assert written.hash("finetune") == cfg.hash("finetune")
