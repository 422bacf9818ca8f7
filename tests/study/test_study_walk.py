"""Run, submit and the dry run (its lines and its sbatch scripts) hand out the same arrays, in the same order: one
walker (``walk.handouts``) behind all three."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.launch import EXECUTORS
from simclr_hpc.launch.registry import Registry, registry_path
from simclr_hpc.study.pipeline import dry_run, run_study, submit_study
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.walk import StudyOptions, arrays, select
from tests.launch.helpers import no_slurm_env
from tests.study.helpers import write_study
from tests.study.recording import NAME, RecordingLauncher

FAKE = "tests.study.fake_runner:run_stage"


def _finish(run) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.result_path.write_text(json.dumps({"metrics": {}, "config_hash": run.cfg.hash(run.stage)}))


def _dry_arrays(lines: list[str]) -> list[tuple[str, list[str]]]:
    dry = []
    for line in lines:
        if line.startswith("array "):
            dry.append((re.match(r"array \S+: (\w+) x", line).group(1), []))
        elif line.startswith("  ["):
            dry[-1][1].append(line.split()[1])
    return dry


def _run_arrays(path) -> list[tuple[str, list[str]]]:
    """What an in-process study run handed out, array by array, from the registry it recorded them in."""
    plan = load_plan(path)
    rows = Registry(registry_path(plan.study.root, plan.study.name)).all()
    out: list[tuple[str, list[str]]] = []
    for rec in rows:
        key = f"{rec.stage}/{rec.run_name}"
        if not out or out[-1][0] != rec.stage or (rec.stage, key) in _seen(out):
            out.append((rec.stage, []))
        out[-1][1].append(key)
    return out


def _seen(out):
    return {(stage, key) for stage, keys in out for key in keys}


def test_run_submit_and_dry_run_hand_out_the_same_arrays_in_the_same_order(tmp_path, monkeypatch):
    monkeypatch.setitem(EXECUTORS, NAME, RecordingLauncher)
    monkeypatch.setattr(RecordingLauncher, "handed", [])
    path = write_study(tmp_path)
    plan = load_plan(path)
    for run in plan.stage("transfer")[:3]:  # some runs finished already: all three skip them
        _finish(run)
    expected = [(a.stage, [r.key for r in a.runs]) for a in arrays(plan, select(plan).todo)]
    assert len(expected) == 4 and sum(len(keys) for _, keys in expected) == len(plan.runs) - 3

    lines = dry_run(path, StudyOptions(executor=NAME))
    assert _dry_arrays(lines) == expected
    assert f"{len(plan.runs) - 3} runs to submit, 0 queued or running, 3 already done (skipped)" in lines

    monkeypatch.setenv("PATH", no_slurm_env(tmp_path)["PATH"])  # the CLI's dry run of Slurm, on a laptop
    result = CliRunner().invoke(app, ["study", "submit", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert _dry_arrays(result.stdout.splitlines()) == expected
    headers = re.findall(r"# ---- sbatch script of array \S+ \((\d+) runs\) ----", result.output)
    assert headers == [str(len(keys)) for _, keys in expected]

    submit_study(path, StudyOptions(executor=NAME, target=FAKE), log=lambda line: None)
    assert [(stage, keys) for stage, keys, _, _ in RecordingLauncher.handed] == expected

    (tmp_path / "runs" / "tiny" / "registry.sqlite").unlink()  # the recorded jobs never run: forget them
    run_study(path, StudyOptions(executor="inprocess", target=FAKE), report=False, log=lambda line: None)
    assert _run_arrays(path) == expected

    result = CliRunner().invoke(app, ["study", "submit", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "0 runs to submit" in result.output  # everything ran in the meantime: nothing left, and no script


@pytest.mark.parametrize(
    "args,message",
    [
        (["--profile", "nosuch"], "--profile nosuch"),
        (["--only", "bogus"], "--only bogus"),
        (["--container", "/no/such/image.sif"], "image file not found"),
    ],
)
def test_every_check_of_submit_stops_the_dry_run_before_it_prints(tmp_path, args, message):
    path = write_study(tmp_path)
    for dry in (True, False):
        result = CliRunner().invoke(app, ["study", "submit", str(path), *args, *(["--dry-run"] if dry else [])])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and message in result.stderr, (result.stdout, result.stderr)
    assert not (tmp_path / "runs").exists()  # nothing built, written or submitted


def test_stale_shards_stop_the_dry_run_before_it_prints(tmp_path):
    """The staleness check of ``study submit`` stops its dry run too: shards built from another source under the
    study's dataset name refuse both, with one line naming ``--rerun-stale``, and nothing is printed or moved."""
    from simclr_hpc import rundir
    from simclr_hpc.data.shards import write_shards

    path = write_study(tmp_path)
    write_shards("shapes:4:20:16:7", rundir.data_dir(tmp_path / "runs", "tiny", "sh4"), seed=0)
    before = sorted(p.name for p in (tmp_path / "runs" / "tiny" / "data").iterdir())
    for dry in (True, False):
        result = CliRunner().invoke(app, ["study", "submit", str(path), *(["--dry-run"] if dry else [])])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and "--rerun-stale" in result.stderr, (result.stdout, result.stderr)
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "data").iterdir()) == before
