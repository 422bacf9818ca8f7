"""Small study files for the tests: written into tmp_path, with every path under it."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "datasets": {"sh4": {"source": "shapes:4:20:16"}, "sh6": {"source": "shapes:6:20:16"}},
    "encoders": {
        "ra": {"dataset": "sh4", "set": {"model.backbone": "resnet18"}},
        "rb": {"dataset": "sh4", "set": {"model.backbone": "resnet34"}},
    },
    "pretrain": {"set": {"train.steps": 2}},
    "finetune": {"encoders": ["ra"], "label_fractions": [0.1, 1.0], "head_layers": [0, 1], "protocols": ["linear"]},
    "distill": {
        "dataset": "sh4",
        "teachers": {"ta": {"encoder": "ra"}, "tb": {"encoder": "rb"}},
        "students": {"sa": {"encoder": "ra"}, "sb": {"encoder": "rb"}},
    },
    "transfer": {
        "encoders": ["ra"],
        "images_per_class": 5,
        "within": [{"dataset": "sh6", "num_classes": [2, 3, 6], "draws": 2}],
        "across": ["sh4"],
    },
}


def study_dict(**changes) -> dict:
    """A copy of TINY with top-level keys replaced (a value of None deletes the key)."""
    data = copy.deepcopy(TINY)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write_study(tmp_path: Path, data: dict | None = None, name: str = "study.yaml") -> Path:
    """Write a study file whose runs go under ``tmp_path/runs``."""
    data = copy.deepcopy(data if data is not None else TINY)
    data.setdefault("root", str(tmp_path / "runs"))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
