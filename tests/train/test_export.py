"""``simclr-hpc export``: the encoder of a finished run loads into torchvision (or our loader) and computes the same h."""

import json

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from simclr_hpc.cli.main import app
from simclr_hpc.train.artifacts import load_simclr
from simclr_hpc.train.export import load_encoder, read_metadata
from tests.conftest import tiny_overrides


def _run(stage, overrides):
    result = CliRunner().invoke(app, ["run", stage] + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def runs(tiny_shards, tmp_path_factory):
    """A width-1 ResNet-18 pretrain run without the CIFAR stem (torchvision's own architecture), a linear fine-tune on
    it, and a tiny CIFAR-stem run at width 1/8 (not torchvision's)."""
    root = tmp_path_factory.mktemp("export")
    base = tiny_overrides(tiny_shards, root, steps=2)
    tv = ["model.width=1.0", "model.cifar_stem=false"]
    _run("pretrain", base + tv + ["run.name=tv"])
    _run("finetune", base + ["run.name=ft", f"finetune.encoder={root}/t/pretrain/tv"])
    _run("pretrain", base + ["run.name=small"])
    return {
        name: root / "t" / stage / name
        for stage, name in (("pretrain", "tv"), ("finetune", "ft"), ("pretrain", "small"))
    }


def run_encoder(run_dir: str, field: str):
    """The encoder of a finished run, as the stages load it (the reference the exports are compared with)."""
    simclr, model_cfg = load_simclr(run_dir, field)
    return simclr.encoder, model_cfg, simclr.head


def _export(*args):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def _features(module, x):
    with torch.no_grad():
        return module.eval()(x)


def test_exported_resnet18_loads_strictly_into_torchvision_with_the_same_features(runs, tmp_path):
    out = tmp_path / "r18.pt"
    result = _export(runs["tv"], "--out", out)
    assert result.exit_code == 0, result.output
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    encoder, _, _ = run_encoder(str(runs["tv"]), "test")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (_features(model, x) - _features(encoder, x)).abs().max().item() < 1e-5
    meta = read_metadata(out)
    assert meta["torchvision_compatible"] is True and meta["architecture"] == "resnet18" and meta["feat_dim"] == 512
    assert "torchvision.models.resnet18()" in meta["loader"]


def test_classifier_export_is_torchvisions_fc_and_gives_the_runs_logits(runs, tmp_path):
    out = tmp_path / "ft.pt"
    assert _export(runs["ft"], "--classifier", "--out", out).exit_code == 0
    model = torchvision.models.resnet18(num_classes=4)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    encoder, _, _ = run_encoder(str(runs["ft"]), "test")
    state = torch.load(out, weights_only=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want = _features(encoder, x) @ state["fc.weight"].T + state["fc.bias"]
    assert (_features(model, x) - want).abs().max().item() < 1e-4
    assert (
        read_metadata(out)["metrics"]["top1"] == json.loads((runs["ft"] / "result.json").read_text())["metrics"]["top1"]
    )


def test_safetensors_metadata_round_trips_and_our_loader_reads_any_architecture(runs, tmp_path):
    for name in ("tv", "small"):
        out = tmp_path / f"{name}.safetensors"
        assert _export(runs[name], "--format", "safetensors", "--out", out).exit_code == 0
        meta = read_metadata(out)
        cfg_hash = json.loads((runs[name] / "result.json").read_text())["config_hash"]
        assert meta["config_hash"] == cfg_hash and meta["image_size"] == 16 and meta["includes"] == ["encoder"]
        assert meta["normalisation"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        assert meta["torchvision_compatible"] is (name == "tv") and meta["cifar_stem"] is (name == "small")
        encoder, _, _ = run_encoder(str(runs[name]), "test")
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(_features(load_encoder(out), x), _features(encoder, x), atol=1e-6)


def test_torchscript_export_runs_without_simclr_hpc_and_carries_its_metadata(runs, tmp_path):
    out = tmp_path / "small.torchscript.pt"
    assert _export(runs["small"], "--format", "torchscript", "--out", out).exit_code == 0
    scripted = torch.jit.load(str(out))
    encoder, _, _ = run_encoder(str(runs["small"]), "test")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(_features(scripted, x), _features(encoder, x), atol=1e-6)
    assert read_metadata(out)["architecture"] == "resnet18"


def test_head_export_adds_the_projection_head_under_head(runs, tmp_path):
    out = tmp_path / "with-head.safetensors"
    assert _export(runs["small"], "--format", "safetensors", "--head", "--out", out).exit_code == 0
    from safetensors.torch import load_file

    keys = set(load_file(str(out)))
    assert any(k.startswith("head.blocks.") for k in keys) and "conv1.weight" in keys
    assert read_metadata(out)["includes"] == ["encoder", "head"]


def test_bad_run_or_missing_part_exits_2_with_one_line(runs, tmp_path):
    unfinished = tmp_path / "t" / "pretrain" / "half"
    unfinished.mkdir(parents=True)
    cases = [
        ((tmp_path / "nope",), "no such run directory"),
        ((unfinished,), "has not finished"),
        ((runs["tv"], "--classifier"), "pretrain run"),
        ((runs["ft"], "--head"), "projection head"),
        ((runs["tv"], "--format", "onnx"), "--format onnx"),
    ]
    for args, words in cases:
        result = _export(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and words in lines[0], (args, result.output)
    assert not (runs["tv"] / "export").exists()
