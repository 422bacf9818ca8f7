"""A study whose dataset source changed under the same name is stale: ``study run`` refuses it (exit 2, one line
naming the dataset and ``--rerun-stale``) instead of reporting every run done on the old shards; ``--rerun-stale``
moves the old shards and results aside (nothing is deleted), rebuilds the shards from the new source and runs again.
Run settings changed under the same run names are refused the same way. Before the fix the second ``study run``
reused the old shards and results and exited 0.
"""

from __future__ import annotations

import json

import yaml

from tests.faults.helpers import cli_inprocess, tree

STUDY = {
    "name": "st",
    "seeds": [0],
    "datasets": {"sh": {"source": "shapes:4:20:16"}},
    "encoders": {"ra": {"dataset": "sh"}},
    "defaults": {
        "data.image_size": 16,
        "data.num_workers": 0,
        "model.width": 0.125,
        "train.global_batch": 16,
        "train.steps": 2,
        "train.eval_batch_per_device": 64,
        "optim.warmup_steps": 1,
    },
    "finetune": {"encoders": ["ra"], "label_fractions": [1.0], "head_layers": [0], "protocols": ["linear"]},
}


def _write(path, **changes):
    data = json.loads(json.dumps(STUDY))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("/")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump({**data, "root": str(path.parent / "runs")}, sort_keys=False))


def _study_run(path, *extra):
    return cli_inprocess("study", "run", str(path), "--executor", "inprocess", "--no-report", *extra, cwd=path.parent)


def _results(root):
    return {p.parent.name: json.loads(p.read_text()) for p in root.rglob("result.json") if ".stale-" not in str(p)}


def test_changed_dataset_source_is_stale_refused_then_rebuilt_and_rerun(tmp_path):
    study = tmp_path / "study.yaml"
    _write(study)
    first = _study_run(study)
    assert first.exit_code == 0, first.stdout + first.stderr
    root = tmp_path / "runs"
    old = _results(root)
    assert len(old) >= 2  # the pretrain and its fine-tune, plus any baselines the study adds
    index_path = next(root.rglob("index.json"))
    old_index = json.loads(index_path.read_text())

    _write(study, **{"datasets/sh/source": "shapes:4:20:16:7"})  # same name, other data
    before = tree(tmp_path)
    stale = _study_run(study)
    assert stale.exit_code == 2, stale.stdout + stale.stderr
    lines = stale.stderr.splitlines()
    assert any("dataset sh" in line and "shapes:4:20:16:7" in line and "--rerun-stale" in line for line in lines), lines
    assert "Traceback" not in stale.stdout + stale.stderr
    assert tree(tmp_path) == before  # nothing built, run or moved

    rerun = _study_run(study, "--rerun-stale")
    assert rerun.exit_code == 0, rerun.stdout + rerun.stderr
    new_index = json.loads(index_path.read_text())
    assert new_index["source"] == "shapes:4:20:16:7" and new_index["content_hash"] != old_index["content_hash"]
    aside = [p for p in index_path.parent.parent.iterdir() if ".stale-" in p.name]
    assert aside and json.loads((aside[0] / "index.json").read_text())["source"] == old_index["source"]
    new = _results(root)
    assert set(new) == set(old)
    for name, result in new.items():
        assert result["data_hash"] == new_index["content_hash"]
        assert result["finished_at"] >= old[name]["finished_at"] and result != old[name]
    assert len([p for p in root.rglob("result.json") if ".stale-" in str(p)]) == len(old)  # old results kept aside

    _write(study, **{"datasets/sh/source": "shapes:4:20:16:7", "defaults/train.steps": 3})  # same names, other runs
    changed = _study_run(study)
    assert changed.exit_code == 2 and f"{len(old)} finished run(s) no longer match" in changed.stderr, changed.stderr
    assert "written by another config" in changed.stderr and "--rerun-stale" in changed.stderr
