"""A stale ``WORLD_SIZE=2 MASTER_ADDR=...`` left in a shell: ``run`` says at once what it waits for, stops at the
deadline (``train.collective_timeout_s``) with one error line naming the ranks, the address and the fix, exits 2, and
writes no run directory (the rendezvous comes before the first write)."""

from __future__ import annotations

import os
import socket
import time

from tests.faults.helpers import cli_inprocess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_stale_world_size_in_the_shell_stops_at_the_deadline_naming_what_it_waits_for(tmp_path, tiny_shards):
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    assert not any(os.environ.get(k) for k in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "SUBMITIT_EXECUTOR"))
    start = time.monotonic()
    result = cli_inprocess(
        "run",
        "pretrain",
        "--set",
        f"run.root={tmp_path / 'runs'}",
        "--set",
        f"data.shards={tiny_shards}",
        "--set",
        "train.collective_timeout_s=10",
        env=env,
    )
    waited = time.monotonic() - start
    assert result.exit_code == 2, (result.output, repr(result.exception))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("simclr-hpc: waiting up to 10 s for WORLD_SIZE=2 ranks at 127.0.0.1:"), lines
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) == 2, lines
    for word in ("rendezvous timed out", "the other 1 rank(s)", env["MASTER_PORT"], "unset WORLD_SIZE"):
        assert word in errors[0], (word, errors[0])
    assert 9 < waited < 60, waited
    assert not (tmp_path / "runs").exists()
