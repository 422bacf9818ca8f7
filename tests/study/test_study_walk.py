"""Run, submit and the dry run (its lines and its sbatch scripts) hand out the same arrays, in the same order."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.study.engine import Outcome, dry_run_lines, run_plan
from simclr_hpc.study.plan import load_plan
from simclr_hpc.study.walk import arrays, select
from tests.launch.helpers import no_slurm_env
from tests.study.helpers import write_study


class Recorder:
    """A backend that only records what it is handed: (stage, run keys) per array."""

    def __init__(self, blocking: bool):
        self.blocking = blocking
        self.seen: list[tuple[str, list[str]]] = []

    def submit(self, stage, runs, after):
        self.seen.append((stage, [run.key for run in runs]))
        return [Outcome(run.key, True, job_id=str(len(self.seen))) for run in runs]


def _finish(run) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.result_path.write_text(json.dumps({"metrics": {}}))


def test_run_submit_and_dry_run_walk_the_same_arrays_in_the_same_order(tmp_path, monkeypatch):
    path = write_study(tmp_path)
    plan = load_plan(path)
    for run in plan.stage("pretrain")[:2] + plan.stage("transfer")[:3]:  # some runs finished: all three skip them
        _finish(run)
    expected = [(a.stage, [r.key for r in a.runs]) for a in arrays(plan, select(plan).todo)]
    assert len(expected) == 4 and sum(len(keys) for _, keys in expected) == len(plan.runs) - 5

    blocking, submitting = Recorder(blocking=True), Recorder(blocking=False)
    run_plan(plan, blocking, log=lambda line: None)
    run_plan(plan, submitting, log=lambda line: None)
    assert blocking.seen == expected and submitting.seen == expected

    lines = dry_run_lines(plan)
    dry, names = [], []
    for line in lines:
        if line.startswith("array "):
            name, stage = re.match(r"array (\S+): (\w+) x", line).groups()
            names.append(name)
            dry.append((stage, []))
        elif line.startswith("  ["):
            dry[-1][1].append(line.split()[1])
    assert dry == expected
    assert lines[-1] == f"{len(plan.runs) - 5} runs to submit, 5 already done (skipped)"

    monkeypatch.setenv("PATH", no_slurm_env(tmp_path)["PATH"])
    result = CliRunner().invoke(app, ["study", "submit", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    headers = re.findall(r"# ---- sbatch script of array (\S+) \((\d+) runs\) ----", result.output)
    assert headers == [(name, str(len(keys))) for name, (_, keys) in zip(names, expected)]
