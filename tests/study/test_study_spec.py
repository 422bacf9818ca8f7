"""Study files are validated before anything runs: each bad file exits 2 with one line per problem, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.spec import StudyError, load_study, source_num_classes
from tests.study.helpers import TINY, study_dict, write_study

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _with(path: str, value) -> dict:
    """TINY with one nested key (dotted path) replaced."""
    data = study_dict()
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return data


BAD = [
    (
        "unknown_source",
        _with("datasets.sh6", {"source": "imagenet:/data/in1k"}),
        ["datasets.sh6.source: unknown dataset source"],
    ),
    (
        "unknown_dataset_ref",
        _with("encoders.ra.dataset", "cifar10"),
        ["encoders.ra.dataset: unknown dataset 'cifar10'"],
    ),
    (
        "k_too_large",
        _with("transfer.within", [{"dataset": "sh6", "num_classes": [2, 7]}]),
        ["transfer.within[0].num_classes: k=7 is more than the 6 classes"],
    ),
    (
        "k_too_large_cifar100",
        {
            **_with("datasets.c100", {"source": "cifar100:/nowhere"}),
            "transfer": {"encoders": ["ra"], "within": [{"dataset": "c100", "num_classes": [150]}]},
        },
        ["k=150 is more than the 100 classes"],
    ),
    (
        "teacher_not_produced",
        _with("distill.pairs", [["ta", "sa"], ["tz", "sb"]]),
        ["distill.pairs[1]: teacher 'tz' is not produced by this study"],
    ),
    ("unknown_study_key", {**study_dict(), "sedes": [0]}, ["sedes: unknown key"]),
    ("unknown_section_key", _with("finetune.label_fraction", [0.1]), ["finetune.label_fraction: unknown key"]),
    ("unknown_config_key", _with("transfer.set", {"train.stepz": 3}), ["transfer.set: train.stepz: unknown key"]),
    ("bad_config_value", _with("pretrain.set", {"optim.base_lr": -1}), ["pretrain.set: optim.base_lr"]),
    ("bad_fraction", _with("finetune.label_fractions", [0.1, 1.5]), ["finetune.label_fractions"]),
    ("bad_type", _with("seeds", "zero"), ["seeds"]),
    ("duplicate_seeds", _with("seeds", [1, 1]), ["seeds must be distinct"]),
    ("unsafe_study_name", _with("name", "x$(reboot)"), ["name: name 'x$(reboot)' is not allowed"]),
    ("dotdot_encoder_name", _with("encoders", {"..": {"dataset": "sh4"}}), ["encoders"]),
    ("bad_shapes_spec", _with("datasets.sh6", {"source": "shapes:6;rm"}), ["datasets.sh6.source: shapes:6;rm"]),
    (
        "missing_section_field",
        _with("distill", {"teachers": {"ta": {"encoder": "ra"}}, "students": {"sa": {"init": "pretrained"}}}),
        ["distill.dataset: Field required", "distill.students.sa: a student with init: pretrained needs an encoder"],
    ),
    (
        "primary_outside_the_grid",
        _with(
            "finetune",
            {
                "encoders": ["ra"],
                "label_fractions": [0.1],
                "head_layers": [0, 1],
                "primary": {"protocol": "full", "label_fraction": 0.5},
            },
        ),
        [
            "finetune.primary.protocol: full is not among finetune.protocols",
            "finetune.primary.label_fraction: 0.5 is not among the label fractions fine-tuned under full",
        ],
    ),
    (
        "whole_dataset_twice",
        _with(
            "transfer", {"encoders": ["ra"], "across": ["sh6"], "within": [{"dataset": "sh6", "num_classes": [2, 6]}]}
        ),
        ["transfer.across[0]: sh6 with all 6 classes is already a transfer.within target"],
    ),
]


@pytest.mark.parametrize("case,data,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_study_exits_2_with_one_line_per_problem_and_writes_nothing(tmp_path, monkeypatch, case, data, expected):
    path = write_study(tmp_path, data)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["study", "run", str(path), "--executor", "inprocess"])
    assert result.exit_code == 2, result.output
    lines = _errors(result)
    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected):
        assert line.startswith("error: ") and want in line, (line, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no shards, no event log


def test_several_problems_give_one_line_each(tmp_path):
    data = study_dict()
    data["datasets"]["sh9"] = {"source": "svhn:/data"}
    data["encoders"]["rb"]["dataset"] = "nope"
    data["distill"]["pairs"] = [["ghost", "sa"]]
    data["transfer"]["within"] = [{"dataset": "sh6", "num_classes": [2, 40]}]
    data["transfer"]["set"] = {"model.colour": 1}
    path = write_study(tmp_path, data)
    with pytest.raises(StudyError) as err:
        load_study(path)
    text = "\n".join(err.value.lines)
    assert len(err.value.lines) == 5, text
    for want in (
        "datasets.sh9.source",
        "encoders.rb.dataset",
        "distill.pairs[0]: teacher 'ghost'",
        "k=40 is more than the 6 classes",
        "transfer.set: model.colour: unknown key",
    ):
        assert want in text


def test_submit_dry_run_rejects_bad_study_too(tmp_path):
    path = write_study(tmp_path, _with("transfer.within", [{"dataset": "sh6", "num_classes": [99]}]))
    result = runner.invoke(app, ["study", "submit", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert len(_errors(result)) == 1


def test_class_count_comes_from_index_json_when_shards_exist(tmp_path):
    shards = tmp_path / "imgs"
    shards.mkdir()
    (shards / "index.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    data = study_dict()
    data["datasets"]["folder"] = {"source": "imagefolder:/not/read", "shards": str(shards)}
    data["transfer"]["within"] = [{"dataset": "folder", "num_classes": [2, 4]}]
    with pytest.raises(StudyError, match="k=4 is more than the 3 classes"):
        load_study(write_study(tmp_path, data))


def test_known_class_counts_of_sources():
    assert source_num_classes("cifar10:/x") == (10, None)
    assert source_num_classes("cifar100:/x") == (100, None)
    assert source_num_classes("stl10:/x") == (10, None)
    assert source_num_classes("mnist5k") == (10, None)
    assert source_num_classes("shapes:7") == (7, None)
    assert source_num_classes("shapes:12:100:16") == (12, None)
    assert source_num_classes("shapes")[0] == 10
    assert source_num_classes("cifar10")[1] is not None  # needs a root


@pytest.mark.parametrize("name", ["demo.yaml", "smoke.yaml", "paper.yaml", "reference-cpu.yaml"])
def test_bundled_studies_validate(name):
    study = load_study(REPO / "configs" / "studies" / name)
    load_plan(REPO / "configs" / "studies" / name)  # every expanded run config validates too
    assert len(study.seeds) >= 2
    assert study.finetune and study.distill and study.transfer


def test_tiny_study_is_valid(tmp_path):
    study = load_study(write_study(tmp_path))
    assert study.name == TINY["name"]


def test_the_bundled_demo_has_three_seeds_every_stage_and_a_baseline_beside_every_probe():
    plan = load_plan(REPO / "configs" / "studies" / "demo.yaml")
    assert plan.study.seeds == [0, 1, 2]
    stages = {run.stage for run in plan.runs}
    assert stages == {"pretrain", "finetune", "distill", "transfer"}
    probes = [
        r
        for r in plan.runs
        if r.stage in ("finetune", "transfer")
        and not r.key.split("/")[1].startswith(("random-", "pixels-", "teacher-"))
    ]
    names = {r.key for r in plan.runs}
    assert len(probes) == 3 * (4 + 3)  # per seed: 2 label fractions x 2 head layers, 3 class subsets of shapes20
    for run in probes:  # each SimCLR probe has its random-init baseline (at layer 0) and a raw-pixel one
        name = run.key.split("/")[1].replace("-h1-", "-h0-")
        assert f"{run.stage}/random-{name}" in names, run.key
        pixels = name.replace("r18-", "pixels-" if run.stage == "transfer" else "pixels-mnist-").replace("-h0", "")
        assert f"{run.stage}/{pixels}" in names, run.key
