"""A full disk (a 64 KiB tmpfs, in a private mount namespace) at a checkpoint, in ``data shards``, in ``study report``
and in ``export``: one error line naming the path (exit 1: the input was fine, the place was not), and no partial file
left behind: only whole files (written atomically) remain."""

from __future__ import annotations

import pytest

from tests.faults.helpers import can_mount, commands_in_mounts, one_error_line, tmpfs

pytestmark = pytest.mark.skipif(not can_mount(), reason="needs a private mount namespace (root) for a tiny tmpfs")


def test_full_disk_is_one_line_naming_the_path_and_leaves_no_partial_file(tmp_path, tiny_shards, finished_pretrain):
    from tests.conftest import tiny_overrides
    from tests.study.helpers import write_study

    full = tmp_path / "full"
    run_dir = finished_pretrain[2]["run_dir"]
    study = write_study(tmp_path)
    sets = [x for o in tiny_overrides(tiny_shards, full / "runs", steps=2) for x in ("--set", o)]
    places = [full / name for name in ("export", "shards", "report", "runs")]  # one 64 KiB disk each
    (export, shards, report, train), left = commands_in_mounts(
        "\n".join(tmpfs(p, 64) for p in places),
        [
            ["export", run_dir, "--out", str(full / "export" / "enc.pt")],
            ["data", "shards", "shapes:4:100:32", str(full / "shards" / "sh")],
            ["study", "report", str(study), "--out", str(full / "report")],
            ["run", "pretrain", *sets],
        ],
        left_in=full,
    )
    one_error_line(export["stderr"], str(full / "export" / "enc.pt"), "No space left on device")
    one_error_line(shards["stderr"], str(full / "shards" / "sh"), "No space left on device")
    one_error_line(report["stderr"], str(full / "report"), "No space left on device")
    errors = [x for x in train["stderr"].splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in train["stderr"], train["stderr"][-3000:]
    assert "checkpoint" in errors[0] and "No space left on device" in errors[0] and str(full) in errors[0], errors
    for outcome in (export, shards, report, train):
        assert outcome["exit_code"] == 1, outcome
    # Nothing partial: no export, no shard, no temporary or partial file, no checkpoint directory; what is left is whole
    # (config.yaml, the metrics and event logs; the report's files that fitted, each written atomically).
    # (a shard build keeps its plan under _build/ to resume from: bookkeeping, not a shard)
    assert not [
        f
        for f in left
        if ".tmp" in f
        or ".partial" in f
        or f.startswith("export/")
        or "step-" in f
        or (f.startswith("shards/") and "/_build/" not in f)
    ], left
    assert not [f for f in left if f.startswith("report/tensorboard")], left  # its event files went with it
