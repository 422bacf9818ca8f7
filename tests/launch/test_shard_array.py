"""``data shards --submit`` on the real local Slurm cluster: an array of shard-range tasks, then the index job."""

from __future__ import annotations

import pytest

from simclr_hpc.data.shards import read_index, verify
from simclr_hpc.launch import slurm as sl
from tests.launch.helpers import cli, wait_until

pytestmark = pytest.mark.slurm


def test_a_shard_build_as_a_slurm_array_then_the_index_job(slurm_cluster, tmp_path):
    # cli() puts this checkout on PYTHONPATH, and sbatch exports the submitting environment to the tasks.
    out = tmp_path / "shapes"
    proc = cli(
        "data",
        "shards",
        "shapes:3:20:16",
        str(out),
        "--shard-size",
        "10",
        "--submit",
        "--profile",
        "local",
        "--tasks",
        "2",
        "--workers",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    finish_id = proc.stdout.split(" and job ")[1].split(",")[0]
    array_id = proc.stdout.split("array job ")[1].split()[0]
    assert "2 task(s); 12 of 12 shard(s) to write" in proc.stdout
    wait_until(lambda: sl.job_state(finish_id) in sl.TERMINAL_STATES, 180, f"index job {finish_id}", poll_s=1)
    logs = sorted((out / "_slurm").glob("*.err"))
    assert sl.job_state(finish_id) == "COMPLETED", "\n".join(p.read_text()[-2000:] for p in logs)
    assert sl.job_state(f"{array_id}_1") == "COMPLETED"
    index = read_index(out)
    assert len(index.split("train").shards) == 6 and verify(out) == []
    assert not (out / "_build").exists()
