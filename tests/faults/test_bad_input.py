"""Malformed configs and study files, and hostile names: exit code 2, exactly one ``error:`` line per problem naming the
dotted field or the file, and nothing written (the run root / study directory does not exist afterwards) or submitted.

Each case runs the real command in a fresh process (``simclr-hpc run STAGE`` or ``simclr-hpc study run``) from an empty
working directory under ``tmp_path``; afterwards nothing at all may exist under ``tmp_path`` besides the input files.
``study run`` is what would start (or, with ``study submit``, submit) jobs: a study that fails validation submits nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.faults.helpers import REPO, cli, tree
from tests.study.helpers import TINY

# ---------------------------------------------------------------------------------------------------------------------
# Run configs: (id, stage, --set overrides, config file text or None, extra env, expected substrings, one per line)
F = "{cfg}"  # replaced by the config file's path in the expected text
CONFIG_CASES = [
    ("wrong_type_int", "pretrain", ["train.steps=many"], None, {}, ["train.steps"]),
    ("wrong_type_bool", "pretrain", ["train.sync_bn=maybe"], None, {}, ["train.sync_bn"]),
    ("unknown_key", "pretrain", ["train.stepz=3"], None, {}, ["train.stepz: unknown key"]),
    ("unknown_section", "pretrain", ["trian.steps=3"], None, {}, ["trian: unknown key"]),
    ("batch_zero", "pretrain", ["train.global_batch=0"], None, {}, ["train.global_batch"]),
    ("steps_negative", "pretrain", ["train.steps=-5"], None, {}, ["train.steps"]),
    ("fraction_1_5", "finetune", ["finetune.label_fraction=1.5"], None, {}, ["finetune.label_fraction"]),
    ("fraction_0", "distill", ["distill.label_fraction=0"], None, {}, ["distill.label_fraction"]),
    ("temperature_0", "pretrain", ["pretrain.temperature=0"], None, {}, ["pretrain.temperature"]),
    ("temperature_negative", "distill", ["distill.temperature=-1"], None, {}, ["distill.temperature"]),
    ("unknown_backbone", "pretrain", ["model.backbone=vgg16"], None, {}, ["model.backbone: unknown backbone 'vgg16'"]),
    ("zero3_with_lars", "pretrain", ["dist.engine=deepspeed", "dist.zero_stage=3"], None, {}, ["optim.name: LARS"]),
    (
        "offload_without_zero",
        "pretrain",
        ["dist.engine=deepspeed", "dist.offload_optimizer=true"],
        None,
        {},
        ["dist.offload_optimizer"],
    ),
    ("zero_with_ddp", "pretrain", ["dist.zero_stage=1"], None, {}, ["dist.zero_stage"]),
    ("unknown_engine", "pretrain", ["dist.engine=horovod"], None, {}, ["dist.engine"]),
    ("unknown_on_error", "pretrain", ["data.on_error=ignore"], None, {}, ["data.on_error"]),
    ("momentum_1", "pretrain", ["optim.momentum=1.0"], None, {}, ["optim.momentum"]),
    ("image_size_4", "pretrain", ["data.image_size=4"], None, {}, ["data.image_size"]),
    ("width_0", "pretrain", ["model.width=0"], None, {}, ["model.width"]),
    ("seed_negative", "pretrain", ["run.seed=-1"], None, {}, ["run.seed"]),
    ("collective_timeout_1s", "pretrain", ["train.collective_timeout_s=1"], None, {}, ["train.collective_timeout_s"]),
    (
        "micro_batch_not_dividing",
        "pretrain",
        ["train.global_batch=16", "train.max_batch_per_device=5"],
        None,
        {},
        ["train.max_batch_per_device"],
    ),
    ("set_without_equals", "pretrain", ["train.steps"], None, {}, ["--set 'train.steps'"]),
    ("set_empty_key_part", "pretrain", ["train..steps=3"], None, {}, ["--set 'train..steps=3'"]),
    ("set_section_as_value", "pretrain", ["train=5"], None, {}, ["train"]),
    ("unknown_stage", "pretrian", [], None, {}, ["stage 'pretrian'"]),
    ("bad_yaml_syntax", "pretrain", [], "train: {steps: 3\nmodel: [\n", {}, [f"{F}: line 2 not valid YAML"]),
    ("yaml_list_not_mapping", "pretrain", [], "- train\n- model\n", {}, [f"{F}: expected a mapping"]),
    ("yaml_section_is_scalar", "pretrain", [], "train: 5\n", {}, [f"{F}: train"]),
    ("file_wrong_type_nested", "pretrain", [], "optim: {base_lr: fast}\n", {}, [f"{F}: optim.base_lr"]),
    (
        "file_unknown_key_nested",
        "pretrain",
        [],
        "model: {backbone: resnet18, depth: 3}\n",
        {},
        [f"{F}: model.depth: unknown key"],
    ),
    ("missing_file", "pretrain", [], "MISSING", {}, ["config file not found"]),
    (
        "world_size_3_batch_16",
        "pretrain",
        ["train.global_batch=16"],
        None,
        {"WORLD_SIZE": "3", "RANK": "0"},
        ["train.global_batch: 16 is not divisible by the world size 3"],
    ),
    # three problems in one file: three lines, one per problem, each naming its field
    (
        "three_problems_three_lines",
        "pretrain",
        [],
        "train: {steps: 0, global_batch: -1}\nmodel: {backbone: vgg}\n",
        {},
        [f"{F}: train.steps", f"{F}: train.global_batch", f"{F}: model.backbone"],
    ),
]


def _check_rejected(proc, expected: list[str]) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("error: ") for line in lines), proc.stderr[-2000:]
    assert len(lines) == len(expected), lines
    for want in expected:
        assert sum(want in line for line in lines) == 1, (want, lines)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[f"config{i:02d}-{c[0]}" for i, c in enumerate(CONFIG_CASES, 1)])
def test_malformed_config_exits_2_one_line_per_problem_writes_nothing(case, tmp_path, tiny_shards):
    name, stage, overrides, text, env, expected = case
    work = tmp_path / "work"
    work.mkdir()
    args = ["run", stage]
    cfg_path = tmp_path / "cfg.yaml"
    if text == "MISSING":
        args += ["-c", str(cfg_path)]
    elif text is not None:
        cfg_path.write_text(text)
        args += ["-c", str(cfg_path)]
    base = [f"run.root={work / 'runs'}", f"data.shards={tiny_shards}", "data.num_workers=0"]
    for item in ([] if name.startswith("set_section") else base) + overrides:
        args += ["--set", item]
    if name.startswith("set_section"):
        args += ["--set", f"run.root={work / 'runs'}"]
    import os

    before = tree(tmp_path)
    proc = cli(*args, env={**os.environ, **env}, cwd=work, timeout=120)
    _check_rejected(proc, [w.replace(F, str(cfg_path)) for w in expected])
    assert tree(tmp_path) == before  # no run root, no config.yaml, nothing


# ---------------------------------------------------------------------------------------------------------------------
# Study files: (id, change applied to a copy of TINY (or raw text), expected substrings, one per line)
def _set(data: dict, dotted: str, value) -> dict:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    if value is _DELETE:
        node.pop(parts[-1])
    else:
        node[parts[-1]] = value
    return data


_DELETE = object()


def _study(*changes) -> dict:
    data = copy.deepcopy(TINY)
    for dotted, value in changes:
        _set(data, dotted, value)
    return data


S = "{study}"
STUDY_CASES = [
    (
        "unknown_dataset_in_encoder",
        _study(("encoders.ra.dataset", "imagenet")),
        [f"{S}: encoders.ra.dataset: unknown dataset 'imagenet'"],
    ),
    (
        "unknown_dataset_in_transfer_across",
        _study(("transfer.across", ["sh4", "cifar10"])),
        [f"{S}: transfer.across[1]: unknown dataset 'cifar10'"],
    ),
    (
        "k_more_than_classes",
        _study(("transfer.within", [{"dataset": "sh6", "num_classes": [2, 9]}])),
        [f"{S}: transfer.within[0].num_classes: k=9 is more than the 6 classes"],
    ),
    (
        "k_below_2",
        _study(("transfer.within", [{"dataset": "sh6", "num_classes": [1]}])),
        [f"{S}: transfer.within.0.num_classes"],
    ),
    (
        "teacher_not_produced",
        _study(("distill.pairs", [["ta", "sa"], ["t_ghost", "sb"]])),
        [f"{S}: distill.pairs[1]: teacher 't_ghost' is not produced by this study"],
    ),
    (
        "dangling_finetune_encoder",
        _study(("finetune.encoders", ["ra", "r_ghost"])),
        [f"{S}: finetune.encoders[1]: unknown encoder 'r_ghost'"],
    ),
    (
        "dangling_teacher_encoder",
        _study(("distill.teachers.tb.encoder", "r_ghost")),
        [f"{S}: distill.teachers.tb.encoder: unknown encoder 'r_ghost'"],
    ),
    (
        "dangling_student_encoder",
        _study(("distill.students.sb.encoder", "r_ghost")),
        [f"{S}: distill.students.sb.encoder: unknown encoder 'r_ghost'"],
    ),
    ("unknown_key_in_overrides", _study(("pretrain.set", {"train.stepz": 2})), [f"{S}: pretrain.set: train.stepz"]),
    ("unknown_section_in_defaults", _study(("defaults", {"trian": {"steps": 2}})), [f"{S}: defaults: trian"]),
    (
        "bad_value_in_encoder_overrides",
        _study(("encoders.rb.set", {"model.backbone": "vgg16"})),
        [f"{S}: encoders.rb.set: model.backbone"],
    ),
    (
        "temperature_0_in_pretrain_set",
        _study(("pretrain.set", {"pretrain.temperature": 0})),
        [f"{S}: pretrain.set: pretrain.temperature"],
    ),
    ("fraction_1_5", _study(("finetune.label_fractions", [0.5, 1.5])), [f"{S}: finetune.label_fractions"]),
    ("wrong_type_seeds", _study(("seeds", "zero")), [f"{S}: seeds"]),
    ("unknown_top_level_key", _study(("sedes", [0])), [f"{S}: sedes: unknown key"]),
    ("unknown_protocol", _study(("finetune.protocols", ["linear", "partial"])), [f"{S}: finetune.protocols.1"]),
    ("missing_required_datasets", _study(("datasets", _DELETE)), [f"{S}: datasets"]),
    ("bad_yaml_syntax", "name: x\ndatasets: {a: [\n", [f"{S}: line 3 not valid YAML"]),
    ("yaml_list_not_mapping", "- name\n- datasets\n", [f"{S}: expected a mapping"]),
    ("missing_file", "MISSING", [f"{S}: config file not found"]),
]


@pytest.mark.parametrize("case", STUDY_CASES, ids=[f"study{i:02d}-{c[0]}" for i, c in enumerate(STUDY_CASES, 1)])
def test_malformed_study_exits_2_one_line_per_problem_writes_and_submits_nothing(case, tmp_path):
    name, content, expected = case
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "study.yaml"
    if isinstance(content, dict):
        content = yaml.safe_dump({**content, "root": str(work / "runs")}, sort_keys=False)
    if content != "MISSING":
        path.write_text(content)
    before = tree(tmp_path)
    proc = cli("study", "run", str(path), "--executor", "inprocess", cwd=work, timeout=120)
    _check_rejected(proc, [w.replace(S, str(path)) for w in expected])
    assert tree(tmp_path) == before  # no runs/<study>/, no shards built, no registry, no report


N_BAD = len(CONFIG_CASES) + len(STUDY_CASES)


@pytest.mark.parametrize("count", [N_BAD], ids=[f"{N_BAD}_malformed_inputs"])
def test_at_least_25_malformed_inputs_are_tried(count):
    assert count >= 25


# ---------------------------------------------------------------------------------------------------------------------
# Hostile names: shell metacharacters, path separators and traversal, newlines, quotes.
HOSTILE = [
    "..",
    "../escape",
    "a/../../escape",
    "/abs/escape",
    "x/y",
    "$(touch PWNED_A)",
    "`touch PWNED_B`",
    "a;touch PWNED_C",
    "line\nbreak",
    "quo'te",
    'dq"x',
    "a b",
    "-rf",
    ".hidden",
    "a&&touch PWNED_D",
    "..\\..\\win",
    "x|tee PWNED_E",
]


def _no_escape(tmp_path: Path, before: set[str]) -> None:
    assert tree(tmp_path) == before
    for where in (tmp_path, tmp_path.parent, REPO, Path("/abs")):
        assert not list(where.glob("PWNED*")) and not (where / "escape").exists(), where


@pytest.mark.parametrize("value", HOSTILE, ids=[f"hostile{i:02d}" for i in range(1, len(HOSTILE) + 1)])
def test_hostile_run_and_study_names_via_set_exit_2_and_create_nothing(value, tmp_path, tiny_shards):
    work = tmp_path / "work"
    work.mkdir()
    before = tree(tmp_path)
    proc = cli(
        "run",
        "pretrain",
        "--set",
        f"run.root={work / 'runs'}",
        "--set",
        f"data.shards={tiny_shards}",
        "--set",
        "train.steps=1",
        "--set",
        f"run.name={value}",
        "--set",
        f"run.study={value}",
        cwd=work,
        timeout=120,
    )
    # both fields are rejected, one line each, before anything runs
    _check_rejected(proc, ["error: run.name", "error: run.study"])
    _no_escape(tmp_path, before)


STUDY_HOSTILE = [
    ("study_name", lambda d, v: _set(d, "name", v), "name"),
    ("dataset_name", lambda d, v: (d["datasets"].__setitem__(v, {"source": "shapes:4"}), d)[1], "datasets"),
    ("encoder_name", lambda d, v: (d["encoders"].__setitem__(v, {"dataset": "sh4"}), d)[1], "encoders"),
    ("teacher_name", lambda d, v: (d["distill"]["teachers"].__setitem__(v, {"encoder": "ra"}), d)[1], "distill"),
    ("student_name", lambda d, v: (d["distill"]["students"].__setitem__(v, {"encoder": "ra"}), d)[1], "distill"),
    ("run_name_in_defaults", lambda d, v: _set(d, "defaults", {"run.name": v}), "defaults"),
]


@pytest.mark.parametrize("where", STUDY_HOSTILE, ids=[s[0] for s in STUDY_HOSTILE])
@pytest.mark.parametrize(
    "value",
    ["../../escape", "$(touch PWNED_S)", "`touch PWNED_T`", "a;touch PWNED_U", "x\ny", "it's", "a/b"],
    ids=["dotdot", "subshell", "backtick", "semicolon", "newline", "quote", "slash"],
)
def test_hostile_names_in_study_files_exit_2_and_create_nothing(where, value, tmp_path):
    _, change, field = where
    work = tmp_path / "work"
    work.mkdir()
    data = change(copy.deepcopy(TINY), value)
    data["root"] = str(work / "runs")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    before = tree(tmp_path)
    proc = cli("study", "run", str(path), "--executor", "inprocess", cwd=work, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines and all(line.startswith(f"error: {path}: ") for line in lines), proc.stderr[
        -2000:
    ]
    assert any(f": {field}" in line for line in lines), lines
    _no_escape(tmp_path, before)


# ---------------------------------------------------------------------------------------------------------------------
# References that only the run itself can check (a shard directory, an encoder or teacher run, k against the data's
# classes): rejected with exit 2 and one line today, but only after config.yaml (and subset.json) were written, so the
# corrected command is then refused as "a different config". Proposed fix (simclr_hpc/train/runner.py, not owned here):
# roll back what a run that never reached its first checkpoint wrote when a UserError ends it (see the fault report).
REFERENCE_CASES = [
    ("missing_shards_dir", "pretrain", ["data.shards={tmp}/typo"], "shard directory not found"),
    ("finetune_encoder_missing", "finetune", ["finetune.encoder={tmp}/no-run"], "error: finetune.encoder:"),
    ("distill_teacher_missing", "distill", ["distill.teacher={tmp}/no-run"], "error: distill.teacher:"),
    (
        "transfer_k_more_than_classes",
        "transfer",
        ["transfer.encoder=random", "transfer.num_classes=9"],
        "transfer.num_classes",
    ),
]


def _reference_run(case, tmp_path, tiny_shards):
    _, stage, overrides, _ = case
    work = tmp_path / "work"
    work.mkdir()
    args = ["run", stage]
    base = [
        f"run.root={work / 'runs'}",
        f"data.shards={tiny_shards}",
        "data.num_workers=0",
        "train.steps=1",
        "data.image_size=16",
        "model.width=0.125",
        "train.global_batch=16",
    ]
    for item in base + [o.replace("{tmp}", str(tmp_path)) for o in overrides]:
        args += ["--set", item]
    return work, cli(*args, cwd=work, timeout=120)


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_bad_reference_exits_2_with_one_error_line(case, tmp_path, tiny_shards):
    _, proc = _reference_run(case, tmp_path, tiny_shards)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and case[3] in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_bad_reference_writes_nothing(case, tmp_path, tiny_shards):
    work, proc = _reference_run(case, tmp_path, tiny_shards)
    assert proc.returncode == 2
    assert not (work / "runs").exists(), sorted(tree(work))


def test_corrected_rerun_after_a_rejected_shards_typo_is_not_refused(tmp_path, tiny_shards):
    work, proc = _reference_run(REFERENCE_CASES[0], tmp_path, tiny_shards)
    assert proc.returncode == 2
    fixed = cli(
        "run",
        "pretrain",
        "--set",
        f"run.root={work / 'runs'}",
        "--set",
        f"data.shards={tiny_shards}",
        "--set",
        "data.num_workers=0",
        "--set",
        "train.steps=1",
        "--set",
        "data.image_size=16",
        "--set",
        "model.width=0.125",
        "--set",
        "train.global_batch=16",
        cwd=work,
        timeout=180,
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]
