"""``simclr-hpc study submit`` on the test cluster, walked from the command line to sbatch (``walk_trace``): the command
makes one call into the library and nothing climbs back up to ``cli/``; and the whole submission asks the controller
each question at most once (one ``squeue -u``, one ``scontrol ping``, ``show config``, ``show partition``, ``sinfo``),
however many arrays it submits. Slurm's commands are counted through logging wrappers on PATH."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import simclr_hpc
from simclr_hpc.cli.main import app
from tests.launch.test_one_queue_query import _wrappers
from tests.launch.walk_trace import trace

pytestmark = [pytest.mark.slurm]

STUDY = {
    "name": "walk",
    "seeds": [0, 1],
    "datasets": {"sh4": {"source": "shapes:4:20:16"}},
    "encoders": {"ra": {"dataset": "sh4"}},
    "pretrain": {"set": {"train.steps": 2}},
    "finetune": {
        "encoders": ["ra"],
        "label_fractions": [1.0],
        "head_layers": [0],
        "protocols": ["linear"],
        "baselines": [],
    },
}


def _question(call: str) -> str:
    """What a logged call asks: ``scontrol show config``, ``scontrol ping``, ``squeue`` (whatever its options)."""
    words = call.split()
    return " ".join(words[: 3 if words[1:2] == ["show"] else 2]) if words[0] == "scontrol" else words[0]


@pytest.mark.timeout(300)
def test_study_submit_walks_from_the_cli_to_sbatch_once_and_asks_each_question_once(
    slurm_cluster, tmp_path, monkeypatch
):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "root": str(tmp_path / "runs")}, sort_keys=False))
    bin_dir, log = _wrappers(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    outputs: list[str] = []

    def submit():
        out = CliRunner().invoke(app, ["study", "submit", str(path), "--profile", "local"])
        outputs.append(out.output)
        assert out.exit_code == 0, out.output

    try:
        walk = trace(submit, Path(simclr_hpc.__file__).parent)
        assert "submitted 4" in outputs[0]
        assert walk.sbatch_calls == 2  # two arrays: the pretrain runs, then the fine-tunes (afterany on them)
        assert walk.climbs == []
        into_library = [step for step in walk.steps if "cli/main.py:_options" not in step]  # the app's own callback
        assert into_library == ["simclr_hpc/cli/study.py:submit_cmd -> simclr_hpc/study/pipeline.py:submit_study"]
        questions = Counter(_question(line) for line in log.read_text().splitlines())
        assert questions and all(n == 1 for n in questions.values()), questions

        log.unlink()
        submit()  # at once again: its jobs are queued or running, so nothing is submitted twice
        assert "submitted 0, 4 queued or running" in outputs[1], outputs[1]
        calls = log.read_text().splitlines()
        squeue = [line.split() for line in calls if line.startswith("squeue")]
        assert len(squeue) == 1 and squeue[0][squeue[0].index("-u") + 1] == str(os.getuid()), calls
        assert all(n == 1 for n in Counter(map(_question, calls)).values()), calls
    finally:
        ids = sorted({job for text in outputs for job in re.findall(r"job (\d+)", text)})
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
