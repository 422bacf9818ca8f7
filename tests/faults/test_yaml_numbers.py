"""YAML is read as YAML 1.2 (issue 24): what a user writes is what a run gets, never a YAML 1.1 guess."""

from __future__ import annotations

import pytest

from simclr_hpc.config import ConfigError, load_config


@pytest.mark.parametrize(
    "text,field,value",
    [
        ("train:\n  steps: 010\n", ("train", "steps"), 10),  # YAML 1.1: octal 8
        ("run:\n  name: 2024\n", ("run", "name"), "2024"),  # a name that looks like a number is a name
        ("run:\n  name: yes\n", ("run", "name"), "yes"),  # YAML 1.1: True
        ("data:\n  shards: 1:30\n", ("data", "shards"), "1:30"),  # YAML 1.1: 90 (base 60)
    ],
)
def test_numbers_and_names_are_read_as_written(tmp_path, text, field, value):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert getattr(getattr(cfg, field[0]), field[1]) == value


def test_a_base_60_time_is_not_a_step_count(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: 1:30\n")
    with pytest.raises(ConfigError, match=r"train\.steps.*1:30") as err:
        load_config(path)
    assert len(err.value.lines) == 1
