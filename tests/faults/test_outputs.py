"""Every output is written atomically to a regular file, is never replaced without ``--force``, and never follows a
link or replaces a special file (a device, a FIFO) whatever ``--force`` says: ``export --out`` (and its ``.json``, and
never the run's own files), ``data inspect``'s contact sheet, ``sweep --manifest``. Each refusal is one line, exit 2,
before anything is written."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from simclr_hpc import fsutil
from tests.faults.helpers import can_mount, cli_inprocess, commands_in_mounts, one_error_line, read_only, tree


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory, finished_pretrain):
    """A private copy of the finished pretrain run (these tests write into its export/)."""
    copy = tmp_path_factory.mktemp("outputs") / "r"
    shutil.copytree(finished_pretrain[2]["run_dir"], copy, symlinks=True)
    return copy


def _refused(result, *words) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    return one_error_line(result.stderr, *words)


def test_export_never_replaces_a_file_or_its_json_without_force(run_copy, tmp_path):
    out = tmp_path / "enc.pt"
    assert cli_inprocess("export", str(run_copy), "--out", str(out)).exit_code == 0
    before = {p: _sha(p) for p in (out, out.with_name("enc.pt.json"))}
    _refused(cli_inprocess("export", str(run_copy), "--out", str(out)), "already exists", "--force")
    out.unlink()  # the weights gone, their .json still there: still refused
    _refused(cli_inprocess("export", str(run_copy), "--out", str(out)), "enc.pt.json", "already exists")
    assert _sha(out.with_name("enc.pt.json")) == before[out.with_name("enc.pt.json")]
    assert cli_inprocess("export", str(run_copy), "--out", str(out), "--force").exit_code == 0
    assert cli_inprocess("export", str(run_copy)).exit_code == 0  # the default <run>/export/encoder.pt
    _refused(cli_inprocess("export", str(run_copy)), "encoder.pt", "already exists")


def test_export_never_replaces_the_runs_own_checkpoint_even_with_force(run_copy):
    state = (run_copy / "checkpoints" / "latest").resolve() / "state.pt"
    before = _sha(state)
    for target in (state, run_copy / "result.json.pt", run_copy / "checkpoints" / "latest" / "state.pt"):
        _refused(cli_inprocess("export", str(run_copy), "--out", str(target), "--force"), "inside the run directory")
    assert _sha(state) == before and not (run_copy / "result.json.pt").exists()


def test_export_to_a_directory_a_device_a_fifo_a_link_or_a_wrong_suffix_is_refused(run_copy, tmp_path):
    (tmp_path / "adir.pt").mkdir()
    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "victim.pt").write_text("precious")
    (tmp_path / "link.pt").symlink_to(tmp_path / "victim.pt")
    cases = [
        (tmp_path / "adir.pt", "is a directory"),
        (tmp_path / "fifo.pt", "FIFO"),
        (tmp_path / "link.pt", "symbolic link"),
        (tmp_path / "enc.safetensors", "named *.pt"),
        (tmp_path / "enc.torchscript.pt", "named *.pt"),
        (Path("/dev/null"), "named *.pt"),
    ]
    if os.geteuid() == 0:
        os.mknod(tmp_path / "dev.pt", 0o600 | 0o020000, os.makedev(1, 3))  # a character device (/dev/null's)
        cases.append((tmp_path / "dev.pt", "character device"))
    before = tree(tmp_path)
    for target, words in cases:
        _refused(cli_inprocess("export", str(run_copy), "--out", str(target), "--force"), words)
    assert tree(tmp_path) == before and (tmp_path / "victim.pt").read_text() == "precious"


def test_contact_sheet_is_never_written_through_a_link(tiny_shards, tmp_path):
    shards = tmp_path / "sh"
    shutil.copytree(tiny_shards, shards)
    (shards / "contact_sheet.png").unlink(missing_ok=True)
    (shards / "contact_sheet.png").symlink_to(tmp_path / "victim.png")
    _refused(cli_inprocess("data", "inspect", str(shards)), "symbolic link", "--out")
    assert not (tmp_path / "victim.png").exists()
    assert cli_inprocess("data", "inspect", str(shards), "--out", str(tmp_path / "sheet.png")).exit_code == 0
    _refused(cli_inprocess("data", "inspect", str(shards), "--out", str(tmp_path / "sheet.png")), "--force")


def test_manifest_never_replaces_a_fifo_or_a_device_even_with_force(tmp_path):
    from tests.study.helpers import write_study

    study = write_study(tmp_path)
    os.mkfifo(tmp_path / "fifo.tsv")
    _refused(
        cli_inprocess("sweep", "finetune", "-c", str(study), "--manifest", str(tmp_path / "fifo.tsv"), "--force"),
        "FIFO",
    )
    assert (tmp_path / "fifo.tsv").is_fifo()
    if os.geteuid() == 0:
        os.mknod(tmp_path / "dev.tsv", 0o600 | 0o020000, os.makedev(1, 3))
        _refused(
            cli_inprocess("sweep", "finetune", "-c", str(study), "--manifest", str(tmp_path / "dev.tsv"), "--force"),
            "character device",
        )
        assert (tmp_path / "dev.tsv").is_char_device()
    assert not (tmp_path / "runs").exists()


def test_atomic_write_never_follows_a_link_planted_at_its_temporary_name(tmp_path):
    target = tmp_path / "out.json"
    (tmp_path / "victim").write_text("precious")
    fsutil.temp_path(target).symlink_to(tmp_path / "victim")
    fsutil.write_json_atomic(target, {"a": 1})
    assert (tmp_path / "victim").read_text() == "precious" and target.read_text().strip() == '{\n  "a": 1\n}'
    assert not fsutil.temp_path(target).exists()
    (tmp_path / "link.json").symlink_to(tmp_path / "victim")
    with pytest.raises(fsutil.AtomicWriteError, match="symbolic link"):
        fsutil.write_text_atomic(tmp_path / "link.json", "x")
    assert (tmp_path / "victim").read_text() == "precious"


@pytest.mark.skipif(not can_mount(), reason="needs a private mount namespace (root) for a read-only file system")
def test_read_only_shards_in_inspect_and_a_read_only_export_place_are_one_line(tiny_shards, run_copy, tmp_path):
    shards, place = tmp_path / "sh", tmp_path / "ro"
    shutil.copytree(tiny_shards, shards)
    (shards / "contact_sheet.png").unlink(missing_ok=True)
    place.mkdir()
    (inspect, export, elsewhere), _ = commands_in_mounts(
        f"{read_only(shards)}\n{read_only(place)}",
        [
            ["data", "inspect", str(shards)],
            ["export", str(run_copy), "--out", str(place / "enc.pt")],
            ["data", "inspect", str(shards), "--out", str(tmp_path / "sheet.png")],
        ],
    )
    assert inspect["exit_code"] == 2 and export["exit_code"] == 2, (inspect, export)
    one_error_line(inspect["stderr"], "contact_sheet.png", "not writable", "--out")
    one_error_line(export["stderr"], "enc.pt", "not writable")
    assert elsewhere["exit_code"] == 0 and (tmp_path / "sheet.png").is_file()
