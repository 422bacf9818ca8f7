"""What a reader opens walking a command from the CLI to sbatch, measured: a profile hook (``sys.setprofile``) over the
command, in this process, that records

* ``called``: every file of the package one of whose functions ran (imports left out: module bodies and whatever
  they run, class bodies and decorators);
* ``to_sbatch``: the package's files on the call stack each time ``sbatch`` is started (the walk proper);
* ``read``: what a reader opens following that walk: the files of ``to_sbatch`` and of every function of the package
  that a function on those stacks calls (each function on the way is read, and what it calls is opened once);
* ``climbs``: each call into ``cli/`` made from a function of the package outside ``cli/`` (the library climbing back
  up to the command line);
* ``steps``: each call from ``cli/`` into the rest of the package (how often a reader returns to the command to see
  what it does next: one, when the command parses and makes one call into the library).

Standard library only, so that ``python tests/launch/walk_trace.py PKG_PARENT STUDY.yaml [ARGS]`` measures any
checkout (an old one included) the same way: it runs ``simclr-hpc study submit STUDY.yaml ARGS`` with that checkout
first on ``sys.path``, prints the three sets and cancels what it submitted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Walk:
    called: set[str] = field(default_factory=set)
    to_sbatch: set[str] = field(default_factory=set)
    climbs: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    sbatch_calls: int = 0
    read: set[str] = field(default_factory=set)


def _ours(frame, package: Path) -> str | None:
    path = Path(frame.f_code.co_filename)
    return str(path.relative_to(package.parent)) if package in path.parents else None


def trace(fn: Callable[[], object], package: Path) -> Walk:
    """Run ``fn()`` under the profile hook; what it walked through in ``package`` (a directory)."""
    walk = Walk()
    on_path, callees = set(), set()
    importing = [0]  # imports and module-level code under way (importlib's _find_and_load, a module body, or the
    # string annotations typer evaluates to build the command): what runs inside them is not the walk
    popen_init = subprocess.Popen.__init__.__code__
    cli = package / "cli"

    def hook(frame, event, _arg):
        code = frame.f_code
        if code.co_name == "<module>" or (code.co_name == "_find_and_load" and code.co_filename.startswith("<frozen")):
            importing[0] += 1 if event == "call" else -1 if event == "return" else 0
            return
        if event != "call" or importing[0]:
            return
        if frame.f_code is popen_init:
            args = frame.f_locals.get("args")
            first = args[0] if isinstance(args, (list, tuple)) and args else args
            if isinstance(first, str) and Path(first).name == "sbatch":
                walk.sbatch_calls += 1
                up = frame.f_back
                while up is not None:
                    name = _ours(up, package)
                    if name:
                        walk.to_sbatch.add(name)
                        on_path.add(up.f_code)
                    up = up.f_back
            return
        name = _ours(frame, package)
        if name is None:
            return
        walk.called.add(name)
        caller = frame.f_back
        while caller is not None and _ours(caller, package) is None:
            caller = caller.f_back
        if caller is None:
            return
        callees.add((caller.f_code, name))
        into_cli, from_cli = (cli in Path(f.f_code.co_filename).parents for f in (frame, caller))
        what = f"{_ours(caller, package)}:{caller.f_code.co_name} -> {name}:{frame.f_code.co_name}"
        if into_cli and not from_cli:
            walk.climbs.append(what)
        elif from_cli and not into_cli:
            walk.steps.append(what)

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    walk.read = walk.to_sbatch | {name for code, name in callees if code in on_path}
    return walk


def main(argv: list[str]) -> None:
    parent, study, *args = argv
    sys.path.insert(0, parent)
    from typer.testing import CliRunner

    from simclr_hpc.cli.main import app

    result = {}

    def submit():
        result["out"] = CliRunner().invoke(app, ["study", "submit", study, *args])

    walk = trace(submit, Path(parent) / "simclr_hpc")
    out = result["out"]
    print(out.output[-2000:], f"exit code {out.exit_code}")
    ids = sorted(set(__import__("re").findall(r"job (\d+)", out.output)))
    if ids:
        subprocess.run(["scancel", *ids], check=False)
    print(f"sbatch calls: {walk.sbatch_calls}")
    print(f"files on the stack at sbatch: {len(walk.to_sbatch)}: {sorted(walk.to_sbatch)}")
    print(f"files read following it: {len(walk.read)}: {sorted(walk.read)}")
    print(f"files with a function called: {len(walk.called)}: {sorted(walk.called)}")
    print(f"climbs back to cli/: {len(walk.climbs)}: {sorted(set(walk.climbs))}")
    print(f"calls from cli/ into the library: {len(walk.steps)}: {walk.steps}")


if __name__ == "__main__":
    main(sys.argv[1:])
