"""Strict JSON everywhere: NaN and Infinity are not JSON, so every JSON file is written with ``allow_nan=False``; a
non-finite number is written as null and named, with the reason, under ``non_finite``."""

from __future__ import annotations

import json
import math

from simclr_hpc.fsutil import dumps_json


def _strict_load(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_metrics_become_null_with_a_reason():
    doc = _strict_load(
        dumps_json({"metrics": {"top1": math.nan, "loss": math.inf, "ok": 0.5}, "curve": [1.0, -math.inf]})
    )
    assert doc["metrics"] == {"top1": None, "loss": None, "ok": 0.5} and doc["curve"] == [1.0, None]
    assert set(doc["non_finite"]) == {"metrics.top1", "metrics.loss", "curve[1]"}
    assert doc["non_finite"]["metrics.top1"].startswith("nan") and doc["non_finite"]["curve[1]"].startswith("-inf")


def test_finite_documents_are_unchanged():
    doc = {"a": 1, "b": [0.25, "x", None], "c": {"d": True}}
    assert json.loads(dumps_json(doc)) == doc and "non_finite" not in dumps_json(doc)


def test_result_and_every_atomic_json_file_are_strict(tmp_path):
    from simclr_hpc.fsutil import write_json_atomic
    from simclr_hpc.rundir import Result

    write_json_atomic(tmp_path / "any.json", {"metrics": {"top1": math.nan}})
    doc = _strict_load((tmp_path / "any.json").read_text())
    assert doc["metrics"]["top1"] is None and "metrics.top1" in doc["non_finite"]
    Result(stage="pretrain", run="r", metrics={"loss": math.inf}).write(tmp_path)
    result = _strict_load((tmp_path / "result.json").read_text())
    assert result["metrics"]["loss"] is None and result["non_finite"]["metrics.loss"].startswith("inf")


def test_metrics_lines_are_strict(tmp_path):
    from simclr_hpc.train.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path / "metrics.jsonl", total_steps=5, start_step=0, enabled=True, label="t")
    writer.log(3, {"loss": math.nan})
    line = _strict_load((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["loss"] is None and line["step"] == 3 and "loss" in line["non_finite"]
