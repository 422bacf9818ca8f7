"""Every encoder's evaluation: the linear probe on standardised features (folded into the exported classifier), kNN
and top-5 from the same frozen features, the raw-pixel baseline, and online monitoring in pretraining."""

import json

import pytest
import torch

from simclr_hpc.config import ConfigError, load_config
from simclr_hpc.train import checkpoint as ckpt
from simclr_hpc.train.runner import run_stage
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def shapes10(tmp_path_factory):
    """10 classes (so top-5 is reported), 16 px, 20 images per class."""
    from simclr_hpc.data.shards import write_shards

    out = tmp_path_factory.mktemp("data") / "shapes10"
    write_shards("shapes:10:20:16", out, shard_size=100, seed=0)
    return out


def _probe(shards, root, name, encoder, extra=()):
    overrides = tiny_overrides(shards, root) + [f"run.name={name}", f"finetune.encoder={encoder}", *extra]
    return run_stage("finetune", load_config(None, overrides, stage="finetune"))


def test_linear_probe_reports_knn_top5_and_how_its_penalty_was_chosen_and_exports_the_folded_layer(shapes10, tmp_path):
    from simclr_hpc.train.probe import PENALTIES

    result = _probe(shapes10, tmp_path, "random", "random")
    m = result["metrics"]
    for key in (
        "top1",
        "top5",
        "knn_top1_k20",
        "knn_top5_k20",
        "knn_top1_k200",
        "knn_top5_k200",
        "probe_epochs",
        "probe_train_loss",
        "eval_images",
        "knn_bank_images",
    ):
        assert key in m, key
    train_images = result["train_images"]
    assert m["knn_bank_images"] == train_images and result["steps"] == 0  # solved in build: the loop ran no step
    assert m["top1"] <= m["top5"] <= 1.0 and m["knn_top1_k20"] <= m["knn_top5_k20"]
    assert 0.0 < m["probe_train_loss"] < 10.0 and "loss" not in m
    # shapes10 has no val split: the penalty was chosen on a class-balanced fifth of the labelled images
    assert m["probe_select_split"] == "train-holdout" and m["probe_select_images"] == train_images // 5
    assert m["probe_penalty"] in PENALTIES and m["probe_converged"] is True
    assert m["probe_epochs"] >= m["probe_penalties_tried"] >= 1
    # The exported classifier (encoder -> folded Linear on raw features) gives exactly the reported top-1.
    from simclr_hpc.data import augment, pipeline
    from simclr_hpc.train.artifacts import load_classifier

    classifier, _ = load_classifier(result["run_dir"], "test", 10, "shapes10")
    classifier.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in pipeline.eval_loader(shapes10, "test", augment.EvalTransform(16), batch_per_device=64):
            correct += int((classifier(batch["views"][0]).argmax(1) == batch["y"]).sum())
            total += len(batch["y"])
    assert total == m["eval_images"] and correct / total == pytest.approx(m["top1"])


def test_pixel_baseline_is_a_linear_probe_on_raw_pixels_and_refuses_full(shapes10, tmp_path):
    m = _probe(shapes10, tmp_path, "pixels", "pixels")["metrics"]
    assert 0.1 < m["top1"] <= 1.0 and "knn_top1_k20" in m and "probe_penalty" in m
    with pytest.raises(ConfigError, match="finetune.encoder: pixels is the raw-pixel linear baseline"):
        load_config(None, ["finetune.encoder=pixels", "finetune.protocol=full"], stage="finetune")


def test_pretrain_monitor_logs_every_n_steps_and_leaves_training_bitwise_unchanged(tiny_shards, tmp_path):
    base = tiny_overrides(tiny_shards, tmp_path, steps=4) + ["train.log_every_steps=3"]
    plain = run_stage("pretrain", load_config(None, base + ["run.name=plain"]))
    watched = run_stage(
        "pretrain",
        load_config(
            None,
            base
            + [
                "run.name=watched",
                "pretrain.monitor_every_steps=2",
                "pretrain.monitor_bank_images=60",
                "pretrain.monitor_eval_images=30",
                "pretrain.monitor_pairs=16",
            ],
        ),
    )
    lines = [json.loads(line) for line in open(f"{watched['run_dir']}/metrics.jsonl")]
    assert [line["step"] for line in lines] == [2, 3, 4]  # monitor steps 2 and 4 merge into the log lines
    for line in (lines[0], lines[2]):
        assert {"knn_top1_k20", "alignment", "uniformity", "embed_std", "positive_rank1"} <= set(line)
    assert "knn_top1_k20" not in lines[1]
    m = watched["metrics"]
    assert m["knn_top1_k20"] == lines[2]["knn_top1_k20"] and m["monitor_s_total"] > 0
    assert "knn_top1_k20" not in plain["metrics"] and plain["metrics"]["loss"] == pytest.approx(m["loss"])
    final = [ckpt.load_state(ckpt.latest_whole(f"{r['run_dir']}/checkpoints"))["model"] for r in (plain, watched)]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


_GATHER_SCRIPT = """
import contextlib, sys, types
import torch.distributed as dist
from simclr_hpc.config import load_config
from simclr_hpc.data.index import read_index
from simclr_hpc.train.evaluate import EvalSet, gather_features

def status(key):  # bytes
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) * 1024

dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=0, world_size=1)
cfg = load_config(None, [f"data.shards={sys.argv[1]}", "data.image_size=32", "train.eval_batch_per_device=400"])
engine = types.SimpleNamespace(rank=0, world_size=1, autocast=contextlib.nullcontext)
ctx = types.SimpleNamespace(cfg=cfg, engine=engine, device="cpu")
pixels = lambda images: images.flatten(1)  # the pixel baseline's embed
few = EvalSet("train", 10, keys=read_index(sys.argv[1]).splits["train"].keys[:8])
gather_features(ctx, few, pixels)  # the loader, decoder and gloo code paged in before the baseline
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS: the peak from here on
x, y = gather_features(ctx, EvalSet("train", 10), pixels)
print(x.shape[0], x.shape[1], len(y), status("VmHWM") - before)
"""


def test_gathering_raw_pixel_features_across_ranks_copies_each_feature_once(tmp_path):
    """Rows that were views of their batch used to be pickled with the whole batch each: the pixel baseline at 100 %
    of MNIST's labels grew to 24 GB and was killed. Here 500 images of 32 px in batches of 400 (4.9 MB each): the
    gather's peak above the process's footprint just before it (torch's own ~0.7-1.6 GB is not the gather's) must be
    a few copies of the features (each batch's, their concatenation, the key-order copy, the gathered tensor) and the
    batches in flight, not one batch per row (that bug, re-created here, peaked 10 GB above; this gather about 19 MB)."""
    import subprocess
    import sys

    from simclr_hpc.data.shards import write_shards

    write_shards("shapes:10:50:32", tmp_path / "s", shard_size=500, seed=0)
    port = 20000 + (hash(str(tmp_path)) % 20000)
    out = subprocess.run(
        [sys.executable, "-c", _GATHER_SCRIPT, str(tmp_path / "s"), str(port)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows, dim, n, peak_above = map(int, out.stdout.split())
    assert n > 300 and rows == n and dim == 3072
    features, batch = n * dim * 4, 400 * dim * 4
    bound = 4 * features + 2 * batch  # 34.6 MB
    assert peak_above < bound, (
        f"gathering {n} pixel features peaked {peak_above / 2**20:.0f} MB above the baseline "
        f"(bound {bound / 2**20:.0f} MB: 4 x the features + 2 batches)"
    )


def test_a_probe_never_chooses_its_penalty_on_the_evaluation_split():
    import numpy as np

    from simclr_hpc.data.index import DatasetIndex, SplitIndex
    from simclr_hpc.train.evaluate import EvalSet
    from simclr_hpc.train.stages.labelled import validation_set

    def index(splits, eval_split):
        parts = {name: SplitIndex([f"{name}-{i}" for i in range(4)], np.arange(4) % 2, []) for name in splits}
        return DatasetIndex("x", "s", ["a", "b"], (8, 8), 3, "png", 0, 0.1, parts, eval_split=eval_split)

    evalset = EvalSet("test", 2)
    assert validation_set(index(("train", "val", "test"), "test"), "val", evalset).split == "val"
    assert validation_set(index(("train", "test"), "test"), "val", evalset) is None  # no val split: holdout
    # ImageNet's official val/ as the evaluation split (no test/): never tuned on
    assert validation_set(index(("train", "val"), "val"), "val", evalset) is None
    subset = EvalSet("test", 1, ["test-1"], {1: 0})  # a class subset: only its classes' val images, mapped alike
    assert validation_set(index(("train", "val", "test"), "test"), "val", subset).keys == ["val-1", "val-3"]
