"""Shared bits of the fault tests: the CLI in a fresh process (exit codes and stderr as a user sees them), shard damage."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "simclr_hpc.cli.main"]


def cli(*args: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 180) -> subprocess.CompletedProcess:
    """``simclr-hpc ARGS`` in a subprocess with a hard timeout: a hang fails the test instead of blocking it."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(REPO)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def cli_inprocess(*args: str, cwd: Path | None = None, env: dict | None = None):
    """``simclr-hpc ARGS`` in this process (typer's CliRunner): no second of import per call, for commands that stop
    before training. Returns click's Result (``exit_code``, ``stdout``, ``stderr``, ``exception``)."""
    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app

    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)
    finally:
        os.chdir(old)


def sets(overrides: list[str]) -> list[str]:
    out: list[str] = []
    for item in overrides:
        out += ["--set", item]
    return out


def rewrite_shard(path: Path, edit: Callable[[str, bytes], bytes | None]) -> None:
    """Rewrite the tar at ``path`` member by member with Python's tarfile; ``edit(name, data)`` returns new bytes, or
    None to drop the member."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            data = edit(name, data)
            if data is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def tree(path: Path) -> set[str]:
    """Every path under ``path`` (relative), to compare a directory before and after."""
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def can_mount() -> bool:
    """This process may make a private mount namespace (root, as on the CI machine): the read-only and disk-full tests
    mount a read-only bind or a tiny tmpfs there, a real file system refusing the write."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


def cli_in_mounts(mounts: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``simclr-hpc ARGS`` in a private mount namespace after the shell lines ``mounts`` (e.g. ``mount -t tmpfs -o
    size=64k tmpfs DIR``); the mounts vanish with the process."""
    return _in_mounts(mounts, [*CLI, *args], timeout)


def _in_mounts(mounts: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``argv`` run from the repository in a private mount namespace after the shell lines ``mounts``."""
    script = f'set -e\n{mounts}\nexec "$@"'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def read_only(path: Path) -> str:
    """Shell lines that make ``path`` read-only inside the namespace (a read-only bind mount of itself)."""
    return f"mount --bind '{path}' '{path}'\nmount -o remount,bind,ro '{path}'"


def tmpfs(path: Path, size_kb: int) -> str:
    """Shell lines that mount a ``size_kb`` KiB tmpfs at ``path`` inside the namespace: a disk that fills up."""
    return f"mkdir -p '{path}'\nmount -t tmpfs -o size={size_kb}k tmpfs '{path}'"


def one_error_line(stderr: str, *words: str) -> str:
    """The single ``error:`` line of ``stderr`` (no traceback), holding every one of ``words``."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def commands_in_mounts(
    mounts: str, commands: list[list[str]], left_in: Path | None = None, timeout: float = 300
) -> tuple[list[dict], dict[str, int]]:
    """Each of ``commands`` (``simclr-hpc`` argv lists) run in one process inside a private mount namespace set up by
    the shell lines ``mounts``: ``([{"exit_code", "stdout", "stderr", ...}], {file left under left_in: size})``."""
    import json

    argv = [
        sys.executable,
        "-m",
        "tests.faults.mounts_driver",
        json.dumps(commands),
        *([str(left_in)] if left_in else []),
    ]
    proc = _in_mounts(mounts, argv, timeout)
    found = [line for line in proc.stdout.splitlines() if line.startswith("OUTCOMES ")]
    assert proc.returncode == 0 and found, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(found[-1].removeprefix("OUTCOMES "))
    return result["outcomes"], result["files"]
