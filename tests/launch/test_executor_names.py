"""Only ``launch/`` knows which executors exist: no module outside it branches on an executor's name, passes one as a
literal, or defaults to one. Everything that differs between Slurm, the local executor and this process is a method
of the ``Launcher`` that ``launch.launcher_for(name)`` returns."""

from __future__ import annotations

import ast
from pathlib import Path

import simclr_hpc
from simclr_hpc.launch import EXECUTORS

PACKAGE = Path(simclr_hpc.__file__).parent
NAMES = set(EXECUTORS) | {"debug"}  # debug: submitit's in-process executor, once ours


def _literal_name(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and node.value in NAMES else None


def _namings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each place that names an executor: in a comparison, as ``executor=...``, or as the default of
    a parameter called ``executor``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [(node.lineno, f"compares with {n!r}") for n in map(_literal_name, elts) if n]
        elif isinstance(node, ast.keyword) and node.arg == "executor" and _literal_name(node.value):
            found.append((node.value.lineno, f"executor={node.value.value!r}"))
        elif isinstance(node, ast.arguments):
            args = [*node.posonlyargs, *node.args]
            pairs = list(zip(args[len(args) - len(node.defaults) :], node.defaults))
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
            found += [(d.lineno, f"{a.arg}={d.value!r}") for a, d in pairs if a.arg == "executor" and _literal_name(d)]
    return found


def test_no_module_outside_launch_names_an_executor():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "launch") in path.parents:
            continue
        for line, what in _namings(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {what}")
    assert not offenders, "\n".join(offenders)


def test_the_check_finds_each_way_of_naming_one():
    code = (
        'if request.executor == "local": pass\nx = run(executor="slurm")\ndef f(executor="inprocess"): pass\n'
        'y = e in ("local", "slurm")\n'
    )
    assert sorted(line for line, _ in _namings(ast.parse(code))) == [1, 2, 3, 4, 4]
