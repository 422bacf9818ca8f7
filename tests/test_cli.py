"""The command line as a new user meets it: -h, --version, quiet third-party output, jobs/logs, config validate/show."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

import simclr_hpc
from simclr_hpc.cli.main import app
from simclr_hpc.launch.registry import JobRecord, Registry, registry_path
from tests.conftest import tiny_overrides
from tests.launch.helpers import no_slurm_env

REPO = Path(__file__).resolve().parents[1]


def _commands(group, path=()):
    """Every command path of the app, groups included: ("run",), ("config", "show"), ... (typer vendors its own click,
    so groups are told by their ``commands``)."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def test_short_help_flag_works_on_every_command():
    runner = CliRunner()
    top = runner.invoke(app, ["-h"])
    assert top.exit_code == 0 and "Usage" in top.output and "--version" in top.output
    paths = [path for path, _ in _commands(typer.main.get_command(app))]
    assert ("config", "validate") in paths and ("logs",) in paths and len(paths) > 15
    for path in paths:
        result = runner.invoke(app, [*path, "-h"])
        assert result.exit_code == 0 and "Usage" in result.output, f"{' '.join(path)} -h: {result.output}"


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"simclr-hpc {simclr_hpc.__version__}"


def test_no_option_help_states_a_default_that_contradicts_the_shown_one():
    """An option whose default is shown ([default: 0]) must not also say "(default 1)" in its help."""
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            text = getattr(param, "help", None) or ""
            shown = getattr(param, "show_default", True) is not False and param.default not in (None, False, [], ())
            assert not (shown and "(default" in text), (
                f"{' '.join(path)} {param.opts}: {text!r} and [default: {param.default}]"
            )


def _python(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SIMCLR_HPC_VERBOSE"}
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_third_party_warnings_are_silenced_unless_verbose(tiny_shards, tmp_path):
    """DeepSpeed's "Setting accelerator to CPU" (which DeepSpeed prints whenever it looks for a GPU on a CPU machine)
    is not in a run's output; our own progress lines, with elapsed time and ETA, are."""
    bare = _python(["-c", "from deepspeed.accelerator import get_accelerator; get_accelerator()"], tmp_path)
    assert "Setting accelerator to CPU" in bare  # what an unquieted process prints
    args = ["run", "pretrain"] + [a for o in tiny_overrides(tiny_shards, tmp_path, steps=1) for a in ("--set", o)]
    quiet = _python(["-m", "simclr_hpc.cli.main", *args], tmp_path)
    assert "Setting accelerator to CPU" not in quiet and "WARNING" not in quiet
    assert "step 1/1" in quiet and "elapsed" in quiet and "eta" in quiet


def test_verbose_flag_reaches_the_processes_the_command_starts(monkeypatch):
    monkeypatch.delenv("SIMCLR_HPC_VERBOSE", raising=False)
    assert CliRunner().invoke(app, ["--verbose", "config", "show"]).exit_code == 0
    assert os.environ.get("SIMCLR_HPC_VERBOSE") == "1"


def _record(root: Path, name: str, job_id: str, state: str, executor: str = "local") -> JobRecord:
    run_dir = root / "s" / "pretrain" / name
    run_dir.mkdir(parents=True)
    return JobRecord(
        study="s",
        stage="pretrain",
        run_name=name,
        job_id=job_id,
        run_dir=str(run_dir),
        executor=executor,
        state=state,
        log_dir=str(root / "s" / "logs"),
        stdout="x",
        stderr="x",
        config_hash="h",
    )


def test_jobs_shows_elapsed_time_and_the_headline_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", no_slurm_env(tmp_path)["PATH"])
    # A local job counts as running only while its pid is still the job's submitit process (issue 24), so the live
    # job is a real process whose command line names submitit, started now.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "submitit"])
    try:
        _jobs_rows_show_elapsed_time_and_the_headline_metric(tmp_path, live.pid)
    finally:
        live.kill()
        live.wait()


def _jobs_rows_show_elapsed_time_and_the_headline_metric(tmp_path: Path, live_pid: int) -> None:
    done, running = (
        _record(tmp_path, "done", "999999901", "RUNNING"),
        _record(tmp_path, "live", str(live_pid), "RUNNING"),
    )
    Path(done.run_dir, "result.json").write_text(json.dumps({"metrics": {"top1": 0.8125, "loss": 0.3}, "wall_s": 65.2}))
    Path(running.run_dir, "metrics.jsonl").write_text(
        json.dumps({"step": 1, "time": time.time() - 125, "loss": 3.0}) + "\n"
    )
    Registry(registry_path(tmp_path, "s")).add([done, running])
    result = CliRunner().invoke(app, ["jobs", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[-2:] == ["ELAPSED", "RESULT"]
    by_run = {row.split()[4]: row.split() for row in rows}
    assert by_run["done"][1] == "COMPLETED" and by_run["done"][-2:] == ["1m05s", "top1=0.8125"]
    assert by_run["live"][1] == "RUNNING" and by_run["live"][-1] == "-"
    assert by_run["live"][-2] in ("2m05s", "2m06s", "2m07s")


def test_logs_shows_the_training_log_by_default_and_stdout_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", no_slurm_env(tmp_path)["PATH"])
    rec = _record(tmp_path, "r", "4242", "COMPLETED")
    Registry(registry_path(tmp_path, "s")).add([rec])
    logs = Path(rec.log_dir)
    logs.mkdir(parents=True)
    (logs / "4242_0_log.err").write_text("12:00:00 INFO pretrain r step 1/1 loss=3.0\n")
    (logs / "4242_0_log.out").write_text("submitit INFO (...) Starting with JobEnvironment\n")
    default = CliRunner().invoke(app, ["logs", "4242", "--root", str(tmp_path)])
    assert default.exit_code == 0 and "step 1/1 loss=3.0" in default.output and "submitit" not in default.output
    stdout = CliRunner().invoke(app, ["logs", "4242", "--root", str(tmp_path), "--stdout"])
    assert stdout.exit_code == 0 and "JobEnvironment" in stdout.output and "step 1/1" not in stdout.output


def test_every_file_under_configs_validates_and_each_kind_is_recognised(monkeypatch):
    monkeypatch.chdir(REPO)
    files = sorted(REPO.glob("configs/**/*.yaml"))
    assert any("clusters" in str(p) for p in files) and any("studies" in str(p) for p in files)
    result = CliRunner().invoke(app, ["config", "validate"])
    assert result.exit_code == 0, result.output
    from simclr_hpc.cli.config_files import detect_kind

    for path in files:
        want = {"clusters": "profile", "studies": "study"}.get(path.parent.name, "run")
        assert detect_kind(yaml.safe_load(path.read_text()) or {}) == want, path
    counts = f"{len(files)} config file(s) valid"
    assert result.output.startswith(counts), result.output


def test_validate_names_the_file_and_field_of_a_bad_profile_and_study(tmp_path):
    profile = tmp_path / "site.yaml"
    profile.write_text("partition: gpu\ngpus_per_node: -1\n")
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nseeds: []\ndatasets: {d: {source: shapes}}\n")
    result = CliRunner().invoke(app, ["config", "validate", str(profile), str(study)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert any(str(profile) in line and "gpus_per_node" in line for line in lines), lines
    assert any(str(study) in line and "seeds" in line for line in lines), lines
    as_run = CliRunner().invoke(app, ["config", "validate", "--kind", "run", str(REPO / "configs/clusters/local.yaml")])
    assert as_run.exit_code == 2 and "unknown key" in as_run.output
    bad_kind = CliRunner().invoke(app, ["config", "validate", "--kind", "site", str(profile)])
    assert bad_kind.exit_code == 2 and "--kind site" in bad_kind.output


def test_config_show_prints_every_fields_doc_above_it_and_stays_yaml():
    from simclr_hpc.config import config_fields, load_config

    shown = CliRunner().invoke(app, ["config", "show", "--set", "train.steps=3"])
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.output) == load_config(overrides=["train.steps=3"]).model_dump(mode="json")
    text = " ".join(line.strip().lstrip("# ") for line in shown.output.splitlines() if line.strip().startswith("#"))
    for _, _, _, doc in config_fields():
        assert " ".join(doc.split()) in text
    plain = CliRunner().invoke(app, ["config", "show", "--no-docs"])
    assert plain.exit_code == 0 and "#" not in plain.output
