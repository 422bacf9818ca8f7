"""Results are keyed by what produced them: a changed question never gets the old answer, and a manifest never
replaces or creates what the user did not name.

* A finished run started again with another config is refused (exit 2), its result.json untouched. Before the fix the
  runner returned the old result.json with exit 0.
* ``sweep --manifest F``: an existing F is kept unless ``--force``; a missing parent is an error, not created; a
  directory at F leaves no ``F.tmp``; the printed ``sbatch`` hint is shell-quoted. Before the fix F was overwritten,
  parents were created and the hint held the bare path.
"""

from __future__ import annotations

import shlex

import pytest

from tests.faults.helpers import cli_inprocess, sets, tree
from tests.study.helpers import write_study


def test_finished_run_started_again_with_another_config_is_refused_and_keeps_its_result(finished_pretrain):
    root, overrides, result = finished_pretrain
    result_path = root / "t" / "pretrain" / "r" / "result.json"
    before = result_path.read_bytes()
    changed = cli_inprocess("run", "pretrain", *sets(overrides + ["train.steps=3"]))
    assert changed.exit_code == 2, (changed.stdout, changed.stderr)
    assert "different config" in changed.stderr and "run.name" in changed.stderr, changed.stderr
    assert '"metrics"' not in changed.stdout  # no old answer printed
    assert result_path.read_bytes() == before
    same = cli_inprocess("run", "pretrain", *sets(overrides))  # the same question still gets its answer
    assert same.exit_code == 0 and result["config_hash"] and str(root) in same.stdout, same.stderr


def test_finished_run_whose_result_belongs_to_another_config_is_refused(finished_pretrain, tmp_path):
    """A result.json copied (or left) beside another config's config.yaml is not this config's answer."""
    import json
    import shutil

    root, overrides, _ = finished_pretrain
    copy_root = tmp_path / "runs"
    shutil.copytree(root, copy_root, symlinks=True)
    result_path = copy_root / "t" / "pretrain" / "r" / "result.json"
    doc = json.loads(result_path.read_text())
    result_path.write_text(json.dumps({**doc, "config_hash": "0" * 16}))
    proc = cli_inprocess("run", "pretrain", *sets(overrides + [f"run.root={copy_root}"]))
    assert proc.exit_code == 2 and "written by a different config" in proc.stderr, proc.stderr


@pytest.fixture()
def study(tmp_path):
    return write_study(tmp_path)


def _sweep(study, *extra):
    return cli_inprocess("sweep", "finetune", "-c", str(study), *extra)


def test_manifest_never_replaces_an_existing_file_without_force(study, tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("precious\n")
    before = tree(tmp_path)
    proc = _sweep(study, "--manifest", str(manifest))
    assert proc.exit_code == 2 and "already exists" in proc.stderr and "--force" in proc.stderr, proc.stderr
    assert manifest.read_text() == "precious\n" and tree(tmp_path) == before  # no config.submitted.yaml either
    forced = _sweep(study, "--manifest", str(manifest), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert manifest.read_text().startswith("finetune\t")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_manifest_never_creates_missing_parent_directories(study, tmp_path):
    before = tree(tmp_path)
    proc = _sweep(study, "--manifest", str(tmp_path / "no" / "such" / "m.tsv"))
    assert proc.exit_code == 2 and "does not exist" in proc.stderr, proc.stderr
    assert not (tmp_path / "no").exists() and tree(tmp_path) == before


def test_manifest_at_a_directory_is_refused_and_leaves_no_tmp_file(study, tmp_path):
    target = tmp_path / "adir"
    target.mkdir()
    before = tree(tmp_path)
    proc = _sweep(study, "--manifest", str(target))
    assert proc.exit_code == 2 and "is a directory" in proc.stderr, proc.stderr
    assert tree(tmp_path) == before and not (tmp_path / "adir.tmp").exists()


def test_manifest_hint_is_shell_quoted(study, tmp_path):
    spaced = tmp_path / "my dir"
    spaced.mkdir()
    manifest = spaced / "it's.tsv"
    proc = _sweep(study, "--manifest", str(manifest))
    assert proc.exit_code == 0, proc.stderr
    hint = next(line for line in proc.stdout.splitlines() if "sbatch" in line)
    command = hint.split("submit with ", 1)[1]
    assert shlex.split(command)[-1] == str(manifest), command
    assert shlex.quote(str(manifest)) in command
