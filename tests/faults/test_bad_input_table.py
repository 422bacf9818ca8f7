"""Bad and hostile input to every command, one table row each: exit code 2, one ``error:`` line holding the row's key
words, no traceback, nothing written or submitted, and no canary file.

Each row runs the real command in this process (typer's CliRunner: no second of import per row; no row reaches
training). Every row works in one shared directory ``W`` of prepared inputs (a binary file, YAML cycles, broken images,
an object ``.npz``, a finished and a tampered run, a study, ...) from an empty working directory inside it. After each
row, every path under ``W`` is what it was before (no run directory, ``config.yaml``, registry, manifest, ``.tmp`` or
report appeared: nothing was written, and a submission would have written its registry), and no file named ``CANARY*``
exists in ``W``, the working directory or the repository (several rows carry ``$(touch CANARY)``-style payloads).

Placeholders: ``{w}`` the shared directory, ``{sh}`` a good shard directory, ``{pre}`` a finished pretrain run,
``{study}`` a valid study file. Rows of the issue (#14) are marked ``# issue``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.faults.helpers import REPO, cli_inprocess, tree
from tests.study.helpers import TINY

T = [
    "--set",
    "data.image_size=16",
    "--set",
    "model.width=0.125",
    "--set",
    "train.global_batch=16",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.steps=2",
]


def run(stage, *sets, root="{w}/runs", shards="{sh}"):
    """``run STAGE`` on the good shards under ``{w}/runs`` plus ``--set`` items."""
    args = ["run", stage, "--set", f"run.root={root}", "--set", f"data.shards={shards}", *T]
    for item in sets:
        args += ["--set", item]
    return args


def submit(stage, *extra, dry=True):
    """``submit STAGE`` with ``--dry-run``, or for real on the local executor (no row may depend on Slurm being here;
    the checks are the launcher's, before any executor is asked)."""
    return ["submit", stage, "--set", "run.root={w}/runs", "--set", "data.shards={sh}", *extra] + (
        ["--dry-run"] if dry else ["--executor", "local"]
    )


# (id, argv, key words of the one error line, options: lines=N (expected error lines), usage=True (click's own usage
# error: exit 2, no "error:" prefix), env={...})
ROWS = [
    # ---- every file the CLI reads goes through one reader ----------------------------------------------------------
    ("config_binary", ["run", "pretrain", "-c", "{w}/binary.yaml"], ["binary.yaml", "not UTF-8"], {}),  # issue
    (
        "config_alias_cycle",
        ["run", "pretrain", "-c", "{w}/cycle.yaml"],
        ["cycle.yaml", "refers to itself"],
        {},
    ),  # issue
    ("config_alias_bomb", ["run", "pretrain", "-c", "{w}/bomb.yaml"], ["bomb.yaml", "expands to more than"], {}),
    ("config_is_directory", ["run", "pretrain", "-c", "{w}/adir"], ["adir", "is a directory"], {}),
    ("config_list_top", ["run", "pretrain", "-c", "{w}/list.yaml"], ["list.yaml", "expected a mapping"], {}),
    ("config_nul_byte", ["run", "pretrain", "-c", "{w}/nul.yaml"], ["nul.yaml", "not valid YAML"], {}),
    ("config_deep_nesting", ["run", "pretrain", "-c", "{w}/deep.yaml"], ["deep.yaml"], {}),
    ("config_missing", ["run", "pretrain", "-c", "{w}/nope.yaml"], ["nope.yaml", "not found"], {}),
    ("config_show_binary", ["config", "show", "-c", "{w}/binary.yaml"], ["binary.yaml", "not UTF-8"], {}),
    (
        "config_validate_two_bad",
        ["config", "validate", "{w}/binary.yaml", "{w}/cycle.yaml"],
        ["binary.yaml", "cycle.yaml"],
        {"lines": 2},
    ),
    ("config_validate_scalar_section", ["config", "validate", "{w}/scalar.yaml"], ["scalar.yaml", "train"], {}),
    ("submit_config_binary", ["submit", "pretrain", "-c", "{w}/binary.yaml", "--dry-run"], ["not UTF-8"], {}),
    ("profile_binary", submit("pretrain", "--profile", "{w}/binary.yaml"), ["binary.yaml", "not UTF-8"], {}),  # issue
    ("profile_alias_cycle", submit("pretrain", "--profile", "{w}/cycle.yaml"), ["refers to itself"], {}),
    ("profile_is_directory", submit("pretrain", "--profile", "{w}/adir/x.yaml"), ["--profile", "not found"], {}),
    ("profile_unknown_name", submit("pretrain", "--profile", "nosuchsite"), ["--profile nosuchsite"], {}),
    ("profile_hostile_name", submit("pretrain", "--profile", "$(touch CANARY)"), ["--profile"], {}),
    ("study_binary", ["study", "run", "{w}/binary.yaml", "--executor", "inprocess"], ["not UTF-8"], {}),  # issue
    ("study_alias_cycle", ["study", "run", "{w}/cycle.yaml", "--executor", "inprocess"], ["refers to itself"], {}),
    ("study_submit_binary", ["study", "submit", "{w}/binary.yaml"], ["not UTF-8"], {}),
    ("study_status_directory", ["study", "status", "{w}/adir"], ["is a directory"], {}),
    ("study_report_bomb", ["study", "report", "{w}/bomb.yaml"], ["expands to more than"], {}),
    ("sweep_study_binary", ["sweep", "finetune", "-c", "{w}/binary.yaml", "--dry-run"], ["not UTF-8"], {}),
    ("index_binary", run("pretrain", shards="{w}/shards_binary_index"), ["index.json", "not UTF-8"], {}),
    ("index_deep_json", run("pretrain", shards="{w}/shards_deep_index"), ["index.json", "nested too deeply"], {}),
    ("index_json_list", run("pretrain", shards="{w}/shards_list_index"), ["index.json", "not a"], {}),
    ("data_verify_binary_index", ["data", "verify", "{w}/shards_binary_index"], ["not UTF-8"], {}),
    ("data_inspect_no_index", ["data", "inspect", "{w}/adir"], ["index.json", "not found"], {}),
    # ---- strict types and numeric bounds ---------------------------------------------------------------------------
    ("steps_true", run("pretrain", "train.steps=true"), ["train.steps", "valid integer"], {}),  # issue
    ("steps_float", run("pretrain", "train.steps=2.5"), ["train.steps", "valid integer"], {}),
    ("steps_1e3", run("pretrain", "train.steps=1e3"), ["train.steps", "valid integer"], {}),
    ("steps_huge", run("pretrain", "train.steps=1000000000000"), ["train.steps", "less than or equal"], {}),
    ("batch_1e20", run("pretrain", "train.global_batch=1e20"), ["train.global_batch"], {}),  # issue
    (
        "batch_huge_int",
        run("pretrain", "train.global_batch=100000000000000000000"),
        ["train.global_batch", "less than or equal"],
        {},
    ),
    ("sync_bn_1", run("pretrain", "train.sync_bn=1"), ["train.sync_bn", "valid boolean"], {}),
    ("lr_true", run("pretrain", "optim.base_lr=true"), ["optim.base_lr", "boolean"], {}),
    ("lr_nan", run("pretrain", "optim.base_lr=.nan"), ["optim.base_lr"], {}),
    ("lr_inf", run("pretrain", "optim.base_lr=.inf"), ["optim.base_lr"], {}),
    ("seed_beyond_numpy", run("pretrain", "run.seed=99999999999"), ["run.seed"], {}),
    ("proj_dim_huge", run("pretrain", "model.proj_dim=10000000"), ["model.proj_dim"], {}),
    ("steps_list", run("pretrain", "train.steps=[1, 2]"), ["train.steps"], {}),
    ("set_alias_cycle", run("pretrain", "train.steps=&a [*a]"), ["--set train.steps", "refers to itself"], {}),
    ("finetune_head_layer_5", run("finetune", "finetune.from_head_layer=5"), ["finetune.from_head_layer"], {}),
    ("workers_negative", run("pretrain", "data.num_workers=-1"), ["data.num_workers"], {}),
    ("eval_batch_zero", run("pretrain", "train.eval_batch_per_device=0"), ["train.eval_batch_per_device"], {}),
    (
        "world_size_3",
        run("pretrain", "train.global_batch=16"),
        ["not divisible by the world size 3"],
        {"env": {"WORLD_SIZE": "3", "RANK": "0"}},
    ),
    (
        "world_size_not_a_number",
        run("pretrain"),
        ["WORLD_SIZE='two'", "whole number"],
        {"env": {"WORLD_SIZE": "two"}},
    ),  # issue 24
    (
        "rank_beyond_world_size",
        run("pretrain"),
        ["RANK=5", "WORLD_SIZE=2", "unset WORLD_SIZE"],
        {"env": {"WORLD_SIZE": "2", "RANK": "5"}},
    ),  # issue 24
    (
        "master_port_out_of_range",
        run("pretrain"),
        ["MASTER_PORT='99999'"],
        {"env": {"WORLD_SIZE": "2", "MASTER_PORT": "99999"}},
    ),  # issue 24
    ("rank_negative", run("pretrain"), ["RANK='-1'"], {"env": {"WORLD_SIZE": "2", "RANK": "-1"}}),  # issue 24
    ("time_99999_days", submit("pretrain", "--time", "99999-00:00:00"), ["time", "more than 365 days"], {}),  # issue
    ("time_garbage", submit("pretrain", "--time", "soon"), ["time", "D-H:M:S"], {}),
    ("time_zero", submit("pretrain", "--time", "0"), ["time", "at least 1 minute"], {}),
    ("nodes_zero", submit("pretrain", "--nodes", "0"), ["nodes"], {}),
    ("gpus_per_node_99", submit("pretrain", "--gpus-per-node", "99"), ["gpus_per_node"], {}),
    ("sif_empty", submit("pretrain", "--container", "{w}/empty.sif"), ["empty.sif", "empty"], {}),  # issue
    ("sif_missing", submit("pretrain", "--container", "{w}/missing.sif"), ["missing.sif", "not found"], {}),
    ("sif_newline", submit("pretrain", "--container", "a\nb.sif"), ["--container", "control character"], {}),
    ("logs_task_negative", ["logs", "123", "--task", "-1"], ["--task"], {"usage": True}),  # issue
    ("logs_task_beyond", ["logs", "555", "--root", "{w}/jobroot", "--task", "7"], ["--task 7", "1 task"], {}),
    ("logs_bad_job_id", ["logs", "12;rm", "--root", "{w}/jobroot"], ["not a job id"], {}),
    ("logs_unknown_job", ["logs", "424242", "--root", "{w}/jobroot"], ["424242", "not in any registry"], {}),
    ("jobs_hostile_study", ["jobs", "--root", "{w}/jobroot", "--study", "../x"], ["--study"], {}),
    ("cancel_both", ["cancel", "1", "--study", "s", "--root", "{w}/jobroot"], ["not both"], {}),
    ("dependency_afterany", submit("pretrain", "--dependency", "afterany:1"), ["only afterok"], {}),
    ("dependency_garbage", submit("pretrain", "--dependency", "afterok:x;y"), ["not a Slurm job id"], {}),
    ("partition_hostile", submit("pretrain", "--partition", "a;touch CANARY"), ["partition"], {}),
    # ---- output paths --------------------------------------------------------------------------------------------
    ("run_root_is_file", run("pretrain", root="{w}/afile"), ["run.root", "is a file"], {}),  # issue
    ("run_root_under_file", run("pretrain", root="{w}/afile/sub"), ["run.root", "afile is in its way"], {}),
    ("run_root_uncreatable", run("pretrain", root="/proc/simclr-nope"), ["cannot create"], {}),  # issue
    ("shards_out_is_file", ["data", "shards", "shapes:4:10:16", "{w}/afile"], ["OUT_DIR", "is a file"], {}),  # issue
    ("shards_out_under_file", ["data", "shards", "shapes:4:10:16", "{w}/afile/x"], ["OUT_DIR", "in its way"], {}),
    ("shards_out_uncreatable", ["data", "shards", "shapes:4:10:16", "/proc/simclr-nope"], ["OUT_DIR", "cannot"], {}),
    ("shards_out_has_shards", ["data", "shards", "shapes:4:10:16", "{sh}"], ["already holds shards"], {}),
    ("report_out_is_file", ["study", "report", "{study}", "--out", "{w}/afile"], ["--out", "is a file"], {}),  # issue
    (
        "report_out_dir_blocked",
        ["study", "report", "{study}", "--out", "{w}/blocked"],
        ["report.md", "is a directory"],
        {},
    ),  # issue: a directory where the report's file must go
    (
        "manifest_existing_file",
        ["sweep", "finetune", "-c", "{study}", "--manifest", "{w}/afile"],
        ["--manifest", "already exists", "--force"],
        {},
    ),  # issue
    (
        "manifest_is_directory",
        ["sweep", "finetune", "-c", "{study}", "--manifest", "{w}/adir"],
        ["--manifest", "is a directory"],
        {},
    ),  # issue
    (
        "manifest_missing_parent",
        ["sweep", "finetune", "-c", "{study}", "--manifest", "{w}/no/such/m.tsv"],
        ["--manifest", "does not exist"],
        {},
    ),  # issue
    (
        "manifest_newline",
        ["sweep", "finetune", "-c", "{study}", "--manifest", "{w}/m\n.tsv"],
        ["control character"],
        {},
    ),
    (
        "manifest_subshell_name",
        ["sweep", "finetune", "-c", "{study}", "--manifest", "{w}/no/$(touch CANARY)"],
        ["does not exist"],
        {},
    ),
    ("sweep_pretrain", ["sweep", "pretrain", "-c", "{study}", "--dry-run"], ["sweep pretrain"], {}),
    # ---- input data ----------------------------------------------------------------------------------------------
    ("npz_object_array", ["data", "shards", "npz:{w}/object.npz", "{w}/out"], ["object.npz", "object array"], {}),
    ("npz_float_labels", ["data", "shards", "npz:{w}/floaty.npz", "{w}/out"], ["floaty.npz", "integers"], {}),
    ("npz_no_x", ["data", "shards", "npz:{w}/nox.npz", "{w}/out"], ["nox.npz", "no array 'x'"], {}),
    ("npz_garbage", ["data", "shards", "npz:{w}/binary.yaml", "{w}/out"], ["binary.yaml", "not a readable .npz"], {}),
    (
        "imagefolder_truncated_jpeg",
        ["data", "shards", "imagefolder:{w}/truncated", "{w}/out"],
        ["truncated/a/1.jpg", "not a readable image"],
        {},
    ),  # issue
    (
        "imagefolder_fake_jpeg",
        ["data", "shards", "imagefolder:{w}/fake", "{w}/out"],
        ["fake/b/fake.jpg", "not a readable image"],
        {},
    ),  # issue
    (
        "imagefolder_empty_png",
        ["data", "shards", "imagefolder:{w}/emptyimg", "{w}/out"],
        ["emptyimg/a/0.png", "not a readable image"],
        {},
    ),
    ("imagefolder_missing", ["data", "shards", "imagefolder:{w}/nope", "{w}/out"], ["nope", "not found"], {}),
    (
        "shapes_petabytes",
        ["data", "shards", "shapes:10:99999999999", "{w}/out"],
        ["shapes:10:99999999999", "GiB"],
        {},
    ),  # issue
    ("shapes_huge_size", ["data", "shards", "shapes:10:500:1025", "{w}/out"], ["SIZE <= 1024"], {}),
    ("shapes_not_int", ["data", "shards", "shapes:ten", "{w}/out"], ["must be integers"], {}),
    ("shapes_seed_huge", ["data", "shards", "shapes:4:10:16:99999999999", "{w}/out"], ["SEED"], {}),
    ("source_unknown_kind", ["data", "shards", "imagenet:/data", "{w}/out"], ["unknown kind"], {}),
    ("cifar_missing", ["data", "shards", "cifar10:{w}/nope", "{w}/out"], ["not found"], {}),
    (
        "val_fraction_1_5",
        ["data", "shards", "shapes:4:10:16", "{w}/out", "--val-fraction", "1.5"],
        ["--val-fraction"],
        {},
    ),
    ("shard_size_0", ["data", "shards", "shapes:4:10:16", "{w}/out", "--shard-size", "0"], ["--shard-size"], {}),
    (
        "image_format_gif",
        ["data", "shards", "shapes:4:10:16", "{w}/out", "--image-format", "gif"],
        ["--image-format"],
        {},
    ),
    ("shards_missing", run("pretrain", shards="{w}/typo"), ["shard directory not found"], {}),
    ("shards_split_missing", run("pretrain", "data.train_split=val"), ["split 'val'"], {}),
    # ---- references, checked before config.yaml / subset.json are written -------------------------------------------
    (
        "finetune_head_beyond_encoder",
        run("finetune", "finetune.encoder={pre}", "finetune.from_head_layer=3"),
        ["finetune.from_head_layer", "0..2"],
        {},
    ),  # issue
    (
        "finetune_tampered_checkpoint",
        run("finetune", "finetune.encoder={w}/tampered"),
        ["finetune.encoder", "sha256"],
        {},
    ),  # issue
    (
        "distill_teacher_is_pretrain",
        run("distill", "distill.teacher={pre}"),
        ["distill.teacher", "must be a fine-tune run"],
        {},
    ),  # issue
    ("finetune_encoder_missing", run("finetune", "finetune.encoder={w}/nope"), ["finetune.encoder", "no such"], {}),
    (
        "finetune_encoder_unfinished",
        run("finetune", "finetune.encoder={w}/adir"),
        ["finetune.encoder", "has not finished"],
        {},
    ),
    ("finetune_encoder_empty", run("finetune"), ["finetune.encoder", "empty"], {}),
    ("transfer_encoder_tampered", run("transfer", "transfer.encoder={w}/tampered"), ["transfer.encoder"], {}),
    (
        "transfer_k_beyond_classes",
        run("transfer", "transfer.encoder=random", "transfer.num_classes=9"),
        ["transfer.num_classes"],
        {},
    ),
    (
        "distill_student_init_missing",
        run("distill", "distill.student_init={w}/nope", "distill.label_weight=1.0"),
        ["distill.student_init"],
        {},
    ),
    (
        "distill_student_init_other_arch",
        run("distill", "distill.student_init={pre}", "distill.label_weight=1.0", "model.backbone=resnet34"),
        ["distill.student_init", "resnet18"],
        {},
    ),
    ("submit_finetune_no_encoder", submit("finetune", dry=False), ["finetune.encoder", "empty"], {}),  # issue
    (
        "submit_missing_shards",
        ["submit", "pretrain", "--set", "run.root={w}/runs", "--set", "data.shards={w}/typo", "--executor", "local"],
        ["shard directory not found"],
        {},
    ),  # issue
    (
        "submit_teacher_is_pretrain",
        submit("distill", "--set", "distill.teacher={pre}", dry=False),
        ["must be a fine-tune run"],
        {},
    ),
    # ---- results keyed by what produced them; one writer ----------------------------------------------------------
    (
        "finished_run_other_config",
        [
            "run",
            "pretrain",
            "--set",
            "run.root={pre_root}",
            "--set",
            "run.study=t",
            "--set",
            "run.name=r",
            "--set",
            "data.shards={sh}",
            *T,
            "--set",
            "train.steps=3",
        ],
        ["different config"],
        {},
    ),  # issue
    (
        "run_dir_locked",
        run("pretrain", "run.root={w}/locked", "run.study=s", "run.name=r"),
        ["another run is writing here", "pid"],
        {},
    ),  # issue: two writers
    (
        "study_run_stale_source",
        ["study", "run", "{w}/stale.yaml", "--executor", "inprocess"],
        ["dataset sh", "shapes:9", "--rerun-stale"],
        {},
    ),  # issue: dataset source changed under the same name
    ("study_submit_stale_source", ["study", "submit", "{w}/stale.yaml"], ["dataset sh", "--rerun-stale"], {}),
    ("shards_is_a_file", run("pretrain", shards="{w}/afile"), ["afile", "shard directory not found"], {}),
    # ---- hostile names ----------------------------------------------------------------------------------------------
    ("run_name_subshell", run("pretrain", "run.name=$(touch CANARY)"), ["run.name"], {}),
    ("run_study_traversal", run("pretrain", "run.study=../../escape"), ["run.study"], {}),
    ("stage_unknown", ["run", "pretrian"], ["stage 'pretrian'"], {}),
    (
        "study_only_bogus",
        ["study", "run", "{study}", "--only", "bogus", "--executor", "inprocess"],
        ["--only bogus"],
        {},
    ),
    (
        "study_executor_slurm",
        ["study", "run", "{study}", "--executor", "slurm"],
        ["--executor 'slurm'", "study submit"],
        {},
    ),
    # ---- issue 24: YAML read as YAML 1.2, strictly ----------------------------------------------------------------
    (
        "yaml_section_twice",
        ["run", "pretrain", "-c", "{w}/twice.yaml"],
        ["twice.yaml", "line 3", "'train'", "given twice"],
        {},
    ),  # issue 24
    (
        "yaml_key_twice_in_study",
        ["study", "submit", "{w}/study_twice.yaml", "--dry-run"],
        ["'seeds'", "given twice"],
        {},
    ),  # issue 24
    (
        "yaml_5000_digit_integer",
        ["run", "pretrain", "-c", "{w}/bigint.yaml"],
        ["bigint.yaml", "5000 digits"],
        {},
    ),  # issue 24
    (
        "set_5000_digit_integer",
        run("pretrain", "train.steps=" + "9" * 5000),
        ["--set train.steps", "5000 digits"],
        {},
    ),  # issue 24
    (
        "study_seeds_booleans",
        ["study", "submit", "{w}/boolseeds.yaml", "--dry-run"],
        ["seeds", "valid integer"],
        {"lines": 2},
    ),  # issue 24: [true, false] were [1, 0]
    # ---- issue 24: the wrong file for the command, a plan too large, one line per bad value -------------------------
    ("study_file_given_to_run", ["run", "pretrain", "-c", "{study}"], ["a study file", "study run"], {}),  # issue 24
    (
        "run_config_given_to_study",
        ["study", "run", "{w}/runcfg.yaml", "--executor", "inprocess"],
        ["a run config", "simclr-hpc run STAGE"],
        {},
    ),  # issue 24
    (
        "study_10000_seeds",
        ["study", "submit", "{w}/seeds10k.yaml", "--dry-run"],
        ["seeds", "0..999"],
        {},
    ),  # issue 24: refused at once (it took minutes of silence to plan)
    (
        "study_plan_too_large",
        ["study", "submit", "{w}/huge_plan.yaml", "--dry-run"],
        ["at least", "more than 20,000"],
        {},
    ),  # issue 24: 999 seeds x 40 fine-tune cells
    (
        "study_one_bad_value_many_runs",
        ["study", "submit", "{w}/zero_ddp.yaml", "--dry-run"],
        ["more run(s)", "dist.zero_stage"],
        {},
    ),  # issue 24: one line, not one per planned run
    ("demo_executor_slurm", ["demo", "--executor", "slurm"], ["--executor 'slurm'", "study submit"], {}),  # issue 24
    (
        "study_head_layer_beyond_head",
        ["study", "submit", "{w}/head3.yaml", "--dry-run"],
        ["from_head_layer: 3", "projection head has 2", "more run(s)"],
        {},
    ),  # issue 24: its fine-tunes failed later
    (
        "study_datasets_share_shards",
        ["study", "submit", "{w}/shared_shards.yaml", "--dry-run"],
        ["datasets.sh6.shards", "also dataset sh4"],
        {},
    ),  # issue 24: one built over the other
    # ---- issue 24: values no run can use -----------------------------------------------------------------------------
    (
        "pretrain_global_batch_1",
        run("pretrain", "train.global_batch=1"),
        ["train.global_batch", "no negatives"],
        {},
    ),  # issue 24: trained with a loss of 0
    (
        "transfer_num_classes_1",
        run("transfer", "transfer.encoder=random", "transfer.num_classes=1"),
        ["transfer.num_classes", "1 class"],
        {},
    ),  # issue 24
    (
        "finetune_one_class_data",
        run("finetune", "finetune.encoder=random", shards="{w}/one_class"),
        ["one_class", "1 class", "at least 2"],
        {},
    ),  # issue 24
    (
        "index_label_out_of_range",
        run("pretrain", shards="{w}/label9"),
        ["index.json", "label 9 outside 0..3"],
        {},
    ),  # issue 24
    (
        "index_label_negative",
        run("pretrain", shards="{w}/label_neg"),
        ["index.json", "label -5 outside"],
        {},
    ),  # issue 24
    (
        "shards_path_with_nul",
        ["run", "pretrain", "-c", "{w}/nul_path.yaml"],
        ["data.shards", "control character"],
        {},
    ),  # issue 24
    ("export_path_too_long", ["export", "{w}/" + "x" * 300], ["File name too long"], {}),  # issue 24
    # ---- issue 24: outputs ----------------------------------------------------------------------------------------
    (
        "export_over_existing_file",
        ["export", "{pre}", "--out", "{w}/existing.pt"],
        ["already exists", "--force"],
        {},
    ),  # issue 24
    (
        "export_over_own_checkpoint",
        ["export", "{pre}", "--out", "{pre}/checkpoints/latest/state.pt", "--force"],
        ["inside the run directory"],
        {},
    ),  # issue 24
    ("export_wrong_suffix", ["export", "{pre}", "--out", "{w}/enc.safetensors"], ["named *.pt"], {}),  # issue 24
    (
        "manifest_fifo_force",
        ["sweep", "finetune", "-c", "{study}", "--manifest", "{w}/fifo.tsv", "--force"],
        ["FIFO"],
        {},
    ),  # issue 24
    # ---- issue 24: every path read from a file stays inside its directory; index.json agrees with its tars --------
    (
        "index_shard_outside",
        run("pretrain", shards="{w}/sh_outside"),
        ["index.json", "'../", "inside the directory"],
        {},
    ),  # issue 24
    (
        "verify_index_etc_passwd",
        ["data", "verify", "{w}/sh_passwd"],
        ["'/etc/passwd'", "inside the directory"],
        {},
    ),  # issue 24: verify hashed /etc/passwd
    (
        "shard_link_outside",
        run("pretrain", shards="{w}/sh_link"),
        ["train-000000.tar", "outside the shard directory"],
        {},
    ),  # issue 24
    ("shard_not_a_tar", run("pretrain", shards="{w}/sh_notar"), ["train-000000.tar", "not a tar file"], {}),  # issue 24
    ("shard_is_fifo", run("pretrain", shards="{w}/sh_fifo"), ["train-000000.tar", "FIFO"], {}),  # issue 24: hung
    (
        "shard_other_first_key",
        run("pretrain", shards="{w}/sh_swapped"),
        ["index.json says its first sample"],
        {},
    ),  # issue 24: the shards of another build under the same names
    ("shard_first_member_link", run("pretrain", shards="{w}/sh_member_link"), ["not a regular file"], {}),  # issue 24
    ("index_duplicate_keys", run("pretrain", shards="{w}/sh_dupkeys"), ["listed twice"], {}),  # issue 24
    ("index_huge_image_size", run("pretrain", shards="{w}/sh_hugesize"), ["40000x40000"], {}),  # issue 24
    ("index_count_not_integer", run("pretrain", shards="{w}/sh_count"), ["count", "whole number"], {}),  # issue 24
    (
        "imagefolder_fifo_image",
        ["data", "shards", "imagefolder:{w}/if_fifo", "{w}/out"],
        ["pipe.png", "FIFO"],
        {},
    ),  # issue 24: hung
    (
        "imagefolder_empty_class",
        ["data", "shards", "imagefolder:{w}/if_empty", "{w}/out"],
        ["if_empty/c", "without images"],
        {},
    ),  # issue 24: was counted as a class
    (
        "imagefolder_class_only_in_test",
        ["data", "shards", "imagefolder:{w}/if_testonly", "{w}/out"],
        ["'z'", "training tree's classes"],
        {},
    ),  # issue 24
    ("npz_inflates_to_7_gib", ["data", "shards", "npz:{w}/bomb.npz", "{w}/out"], ["7.0 GiB", "4 GiB"], {}),  # issue 24
    (
        "npz_labels_up_to_2_40",
        ["data", "shards", "npz:{w}/labels40.npz", "{w}/out"],
        ["1099511627776", "1,000,000 classes"],
        {},
    ),
]


def _bytes_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _images(root: Path, size: int = 24) -> None:
    from PIL import Image

    for cls in "ab":
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.jpg", quality=90)


def _build_world(w: Path, sh: Path, pre: Path) -> None:
    _bytes_file(w / "binary.yaml", bytes(range(256)) * 4)
    (w / "cycle.yaml").write_text("train: &a [*a]\n")
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    (w / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (w / "list.yaml").write_text("- train\n- model\n")
    (w / "scalar.yaml").write_text("train: 5\n")
    _bytes_file(w / "nul.yaml", b"train:\n  steps: 3\x00\n")
    (w / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (w / "adir").mkdir()
    (w / "afile").write_text("precious\n")
    (w / "blocked" / "report.md").mkdir(parents=True)
    _bytes_file(w / "empty.sif", b"")
    for name, text in (("binary", None), ("deep", "[" * 100000 + "]" * 100000), ("list", "[1, 2]")):
        d = w / f"shards_{name}_index"
        d.mkdir()
        if text is None:
            _bytes_file(d / "index.json", bytes(range(128, 256)))
        else:
            (d / "index.json").write_text(text)
    np.savez(w / "object.npz", x=np.array([object()] * 4, dtype=object), y=np.arange(4))
    np.savez(w / "floaty.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0.5, 1.0, 0.0, 1.0]))
    np.savez(w / "nox.npz", y=np.arange(4))
    _images(w / "truncated")
    data = (w / "truncated" / "a" / "1.jpg").read_bytes()
    (w / "truncated" / "a" / "1.jpg").write_bytes(data[: len(data) // 2])
    _images(w / "fake")
    (w / "fake" / "b" / "fake.jpg").write_text("GIF89a, or rather: not an image at all\n")
    _images(w / "emptyimg")
    _bytes_file(w / "emptyimg" / "a" / "0.png", b"")
    shutil.copytree(pre, w / "tampered", symlinks=True)
    state = (w / "tampered" / "checkpoints" / "latest").resolve() / "state.pt"
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    lock_dir = w / "locked" / "s" / "pretrain" / "r"
    lock_dir.mkdir(parents=True)
    from simclr_hpc.runlock import LOCK_FILE, holder_record

    (lock_dir / LOCK_FILE).write_text(json.dumps(holder_record()))  # held by this live test process
    shutil.copytree(sh, w / "stale_shards")  # shards whose index says they were built from another source
    index = json.loads((w / "stale_shards" / "index.json").read_text())
    (w / "stale_shards" / "index.json").write_text(json.dumps({**index, "source": "shapes:9"}))
    (w / "stale.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "stale",
                "root": str(w / "sroot"),
                "datasets": {"sh": {"source": "shapes:4:40:16", "shards": str(w / "stale_shards")}},
                "encoders": {"ra": {"dataset": "sh"}},
                "finetune": {"encoders": ["ra"], "label_fractions": [1.0], "head_layers": [0], "protocols": ["linear"]},
            },
            sort_keys=False,
        )
    )
    study = {**TINY, "root": str(w / "sroot")}
    (w / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    _job_registry(w / "jobroot")
    (w / "work").mkdir()
    _issue24_inputs(w, sh, study)


def _issue24_inputs(w: Path, sh: Path, study: dict) -> None:
    from simclr_hpc.data.shards import write_shards

    (w / "twice.yaml").write_text("train:\n  steps: 3\ntrain:\n  global_batch: 8\n")
    (w / "study_twice.yaml").write_text(yaml.safe_dump(study, sort_keys=False) + "seeds: [3]\n")
    (w / "bigint.yaml").write_text("train:\n  steps: " + "9" * 5000 + "\n")
    (w / "runcfg.yaml").write_text("train:\n  steps: 3\nmodel:\n  width: 0.5\n")
    (w / "nul_path.yaml").write_text('data:\n  shards: "/tmp/a\\0b"\n')
    for name, change in (
        ("boolseeds", {"seeds": [True, False]}),
        ("seeds10k", {"seeds": list(range(10_000))}),
        ("zero_ddp", {"defaults": {"dist.zero_stage": 1}}),
        ("head3", {"finetune": {**study["finetune"], "head_layers": [0, 1, 3]}}),
        (
            "shared_shards",
            {"datasets": {name: {**spec, "shards": str(w / "one_dir")} for name, spec in study["datasets"].items()}},
        ),
        (
            "huge_plan",
            {
                "seeds": list(range(999)),
                "finetune": {**study["finetune"], "label_fractions": [round(0.05 * i, 2) for i in range(1, 21)]},
            },
        ),
    ):
        (w / f"{name}.yaml").write_text(yaml.safe_dump({**study, **change}, sort_keys=False))
    np.savez(
        w / "one.npz", x=np.random.default_rng(0).integers(0, 255, (24, 16, 16), dtype=np.uint8), y=np.zeros(24, int)
    )
    write_shards(f"npz:{w / 'one.npz'}", w / "one_class", shard_size=64)
    for name, label in (("label9", 9), ("label_neg", -5)):
        shutil.copytree(sh, w / name)
        index = json.loads((w / name / "index.json").read_text())
        index["splits"]["train"]["labels"][3] = label
        (w / name / "index.json").write_text(json.dumps(index))
    (w / "existing.pt").write_text("precious\n")
    os.mkfifo(w / "fifo.tsv")
    _hostile_shards(w, sh)
    _hostile_sources(w)


def _edited_index(w: Path, sh: Path, name: str, edit) -> Path:
    shutil.copytree(sh, w / name)
    index = json.loads((w / name / "index.json").read_text())
    edit(index)
    (w / name / "index.json").write_text(json.dumps(index))
    return w / name


def _hostile_shards(w: Path, sh: Path) -> None:
    import io
    import tarfile

    def first_shard(index: dict) -> dict:
        return index["splits"]["train"]["shards"][0]

    _edited_index(w, sh, "sh_outside", lambda i: first_shard(i).update(name="../sh_notar/train-000000.tar"))
    _edited_index(w, sh, "sh_passwd", lambda i: first_shard(i).update(name="/etc/passwd"))
    _edited_index(
        w, sh, "sh_dupkeys", lambda i: i["splits"]["train"]["keys"].__setitem__(1, i["splits"]["train"]["keys"][0])
    )
    _edited_index(w, sh, "sh_hugesize", lambda i: i.update(image_size=[40000, 40000]))
    _edited_index(w, sh, "sh_count", lambda i: first_shard(i).update(count=1e9))
    for name in ("sh_link", "sh_notar", "sh_fifo", "sh_swapped", "sh_member_link"):
        shutil.copytree(sh, w / name)
    (w / "sh_link" / "train-000000.tar").unlink()
    (w / "sh_link" / "train-000000.tar").symlink_to(sh / "train-000000.tar")  # a whole tar, outside its directory
    size = (sh / "train-000000.tar").stat().st_size  # the size index.json recorded: only the contents differ
    (w / "sh_notar" / "train-000000.tar").write_bytes((bytes(range(256)) * (size // 256 + 1))[:size])
    (w / "sh_fifo" / "train-000000.tar").unlink()
    os.mkfifo(w / "sh_fifo" / "train-000000.tar")
    tars = sorted((w / "sh_swapped").glob("train-*.tar"))
    tars[0].rename(w / "sh_swapped" / "tmp.tar")
    tars[1].rename(tars[0])
    (w / "sh_swapped" / "tmp.tar").rename(tars[1])
    with tarfile.open(w / "sh_member_link" / "train-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        link = tarfile.TarInfo("train-0000000.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo("train-0000000.cls"), io.BytesIO(b""))
    with open(w / "sh_member_link" / "train-000000.tar", "r+b") as f:
        f.truncate(size)


def _hostile_sources(w: Path) -> None:
    import zipfile

    from PIL import Image

    for name, classes in (
        ("if_fifo", "ab"),
        ("if_empty", "ab"),
        ("if_testonly/train", "ab"),
        ("if_testonly/test", "abz"),
    ):
        for cls in classes:
            (w / name / cls).mkdir(parents=True)
            Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(w / name / cls / "0.png")
    os.mkfifo(w / "if_fifo" / "a" / "pipe.png")
    (w / "if_empty" / "c").mkdir()
    header = io_bytes()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (7 * 2**20, 32, 32)}
    )  # 7 GiB declared, 350 bytes stored
    with zipfile.ZipFile(w / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", header.getvalue() + bytes(1000))
        y = io_bytes()
        np.save(y, np.zeros(4, np.int64))
        z.writestr("y.npy", y.getvalue())
    np.savez(w / "labels40.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 2**40, 3]))


def io_bytes():
    import io

    return io.BytesIO()


def _job_registry(root: Path) -> None:
    from simclr_hpc.launch.registry import JobRecord, Registry, registry_path

    run_dir = root / "s" / "pretrain" / "r"
    Registry(registry_path(root, "s")).add(
        [
            JobRecord(
                study="s",
                stage="pretrain",
                run_name="r",
                job_id="555",
                executor="slurm",
                state="COMPLETED",
                run_dir=str(run_dir),
                log_dir=str(run_dir / "slurm"),
                stdout="o",
                stderr="e",
                config_hash="0" * 16,
                tasks=1,
            )
        ]
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_shards, finished_pretrain):
    root, _, result = finished_pretrain
    w = tmp_path_factory.mktemp("badinput")
    _build_world(w, tiny_shards, Path(result["run_dir"]))
    return {
        "w": str(w),
        "sh": str(tiny_shards),
        "pre": result["run_dir"],
        "pre_root": str(root),
        "study": str(w / "study.yaml"),
    }


def _canaries(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.rglob("CANARY*")] if dirs else []


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(row, world):
    _, argv, words, opts = row
    w = Path(world["w"])
    args = [a.format(**world) for a in argv]
    before = tree(w)
    pre_before = tree(Path(world["pre_root"]))
    result = cli_inprocess(*args, cwd=w / "work", env=opts.get("env"))
    out = (result.stdout or "") + (result.stderr or "")
    assert "Traceback" not in out, out
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), out[-3000:])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if opts.get("usage"):
        assert all(word in result.stderr for word in words), result.stderr
    else:
        assert len(lines) == opts.get("lines", 1) and all(line.startswith("error: ") for line in lines), lines
        for word in words:
            assert any(word.format(**world) in line for line in lines), (word, lines)
    assert tree(w) == before, sorted(tree(w) ^ before)
    assert tree(Path(world["pre_root"])) == pre_before
    assert not _canaries(w, REPO / "simclr_hpc", REPO / "configs") and not list(REPO.glob("CANARY*"))


def test_the_table_holds_at_least_80_inputs_and_every_example_of_the_issue():
    assert len(ROWS) >= 80 and len({r[0] for r in ROWS}) == len(ROWS)
    ids = {r[0] for r in ROWS}
    issue_examples = {
        "config_binary",
        "profile_binary",
        "study_binary",
        "run_root_is_file",
        "run_root_uncreatable",
        "shards_out_is_file",
        "shapes_petabytes",
        "npz_object_array",
        "imagefolder_truncated_jpeg",
        "imagefolder_fake_jpeg",
        "config_alias_cycle",
        "report_out_is_file",
        "report_out_dir_blocked",
        "manifest_existing_file",
        "manifest_is_directory",
        "manifest_missing_parent",
        "finished_run_other_config",
        "submit_finetune_no_encoder",
        "submit_missing_shards",
        "steps_true",
        "batch_1e20",
        "time_99999_days",
        "sif_empty",
        "logs_task_negative",
        "finetune_head_beyond_encoder",
        "finetune_tampered_checkpoint",
        "distill_teacher_is_pretrain",
        "run_dir_locked",
        "study_run_stale_source",
    }
    assert issue_examples <= ids, issue_examples - ids


def test_the_table_holds_the_examples_of_issue_24():
    ids = {r[0] for r in ROWS}
    issue24 = {
        "yaml_section_twice",
        "yaml_5000_digit_integer",
        "study_seeds_booleans",
        "study_file_given_to_run",
        "run_config_given_to_study",
        "study_10000_seeds",
        "study_plan_too_large",
        "study_one_bad_value_many_runs",
        "demo_executor_slurm",
        "pretrain_global_batch_1",
        "transfer_num_classes_1",
        "finetune_one_class_data",
        "index_label_out_of_range",
        "index_label_negative",
        "shards_path_with_nul",
        "study_head_layer_beyond_head",
        "study_datasets_share_shards",
        "export_over_existing_file",
        "export_over_own_checkpoint",
        "export_wrong_suffix",
        "manifest_fifo_force",
        "world_size_not_a_number",
        "rank_beyond_world_size",
        "master_port_out_of_range",
        "index_shard_outside",
        "verify_index_etc_passwd",
        "shard_link_outside",
        "shard_not_a_tar",
        "shard_is_fifo",
        "shard_other_first_key",
        "index_duplicate_keys",
        "index_huge_image_size",
        "imagefolder_fifo_image",
        "imagefolder_empty_class",
        "npz_inflates_to_7_gib",
        "npz_labels_up_to_2_40",
    }
    assert issue24 <= ids, issue24 - ids
