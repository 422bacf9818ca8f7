from conftest import rewrite_shard
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.data.shards import read_index

runner = CliRunner()


def test_shards_inspect_verify_on_a_clean_directory(tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(
        app, ["data", "shards", "shapes:3:10:16", str(out), "--val-fraction", "0.2", "--shard-size", "8", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "train: 24 samples in 3 shard(s)" in result.output and "val: 6 samples" in result.output
    result = runner.invoke(app, ["data", "inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "triangle" in result.output and f"contact sheet: {out / 'contact_sheet.png'}" in result.output
    assert (out / "contact_sheet.png").is_file()
    result = runner.invoke(app, ["data", "verify", str(out)])
    assert result.exit_code == 0 and result.output.startswith("ok: 90 samples")


def test_verify_exits_1_and_names_each_problem(tmp_path):
    out = tmp_path / "s"
    assert runner.invoke(app, ["data", "shards", "shapes:2:6:16", str(out)]).exit_code == 0
    train = read_index(out).split("train")
    key = train.keys[1]
    rewrite_shard(out / train.shards[0].name, lambda n, d: None if n == f"{key}.cls" else d)
    result = runner.invoke(app, ["data", "verify", str(out)])
    assert result.exit_code == 1
    assert f"train-000000.tar: key {key}: missing label (.cls)" in result.output


def test_user_errors_exit_2_with_one_line(tmp_path):
    result = runner.invoke(app, ["data", "verify", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "shard directory not found" in result.output
    result = runner.invoke(app, ["data", "shards", f"cifar10:{tmp_path}", str(tmp_path / "o")])
    assert result.exit_code == 2 and "cifar-10-batches-py/data_batch_1: not found" in result.output
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["data", "shards", "shapes:2:2", str(tmp_path / "o"), "--image-format", "gif"])
    assert result.exit_code == 2 and "--image-format 'gif'" in result.output


def test_shards_submit_dry_run_prints_the_array_and_the_index_job_and_writes_nothing(tmp_path):
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        [
            "data",
            "shards",
            "shapes:2:20:16",
            str(out),
            "--shard-size",
            "10",
            "--submit",
            "--profile",
            "local",
            "--tasks",
            "3",
            "--workers",
            "3",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    array, index_job = result.output.split("#!/bin/bash")[1:]
    assert "#SBATCH --array=0-2%2" in array and "#SBATCH --cpus-per-task=3" in array
    assert "--gpus" not in array and "#SBATCH --partition=debug" in array
    assert "#SBATCH --dependency='afterok:<array job id>'" in index_job and "#SBATCH --cpus-per-task=1" in index_job
    assert not out.exists()
    result = runner.invoke(app, ["data", "shards", "shapes:2:2", str(out), "--check", "some"])
    assert result.exit_code == 2 and "--check 'some': use header or full" in result.output
