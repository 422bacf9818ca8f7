"""Results keyed by what they were computed from: a finished run whose shards were rebuilt with other content at the
same path, or whose encoder run directory was replaced by another run, is refused (one line naming what changed,
exit 2), never answered with its old result; the same inputs still give the finished result at once."""

from __future__ import annotations

import shutil

from simclr_hpc.config import load_config
from simclr_hpc.data.shards import write_shards
from simclr_hpc.train.runner import run_stage
from tests.conftest import tiny_overrides
from tests.faults.helpers import cli_inprocess, one_error_line


def _sets(overrides: list[str]) -> list[str]:
    return [x for item in overrides for x in ("--set", item)]


def test_finished_runs_are_refused_when_their_data_or_encoder_changed_behind_the_same_paths(tmp_path, tiny_shards):
    shards, root = tmp_path / "shards", tmp_path / "runs"
    shutil.copytree(tiny_shards, shards)
    base = tiny_overrides(shards, root, steps=2)
    enc = run_stage("pretrain", load_config(None, [*base, "run.name=enc"], stage="pretrain"))["run_dir"]
    other = run_stage("pretrain", load_config(None, [*base, "run.name=other", "run.seed=5"], stage="pretrain"))
    ft = [*base, "run.name=ft", f"finetune.encoder={enc}"]
    first = run_stage("finetune", load_config(None, ft, stage="finetune"))
    again = cli_inprocess("run", "finetune", *_sets(ft))  # the same inputs: the finished result, at once
    assert (
        again.exit_code == 0
        and first["metrics"]["top1"]
        == run_stage("finetune", load_config(None, ft, stage="finetune"))["metrics"]["top1"]
    )

    shutil.rmtree(enc)
    shutil.copytree(other["run_dir"], enc, symlinks=True)  # another run now answers to the encoder's path
    result = cli_inprocess("run", "finetune", *_sets(ft))
    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, "ft", "changed since", "encoder")

    shutil.rmtree(shards)
    write_shards("shapes:4:40:16:7", shards, shard_size=64)  # other content at the same path
    result = cli_inprocess("run", "pretrain", *_sets([*base, "run.name=other", "run.seed=5"]))
    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, "other", "changed since", "data")
