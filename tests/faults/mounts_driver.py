"""Run several ``simclr-hpc`` commands in one process (typer's CliRunner) and print their outcomes as one JSON line,
then every file left under a directory (``argv[2]``) with its size: what ``helpers.commands_in_mounts`` starts inside
a private mount namespace (which vanishes with the process), so that one interpreter start serves every command of a
read-only or disk-full test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.faults.helpers import cli_inprocess

if __name__ == "__main__":
    outcomes = []
    for argv in json.loads(sys.argv[1]):
        result = cli_inprocess(*argv)
        outcomes.append(
            {
                "argv": argv,
                "exit_code": result.exit_code,
                "stdout": result.stdout,
                "stderr": result.stderr,
                "exception": repr(result.exception),
            }
        )
    left = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    files = {str(p.relative_to(left)): p.stat().st_size for p in left.rglob("*") if p.is_file()} if left else {}
    print("OUTCOMES " + json.dumps({"outcomes": outcomes, "files": files}))
