"""The pretraining monitor on tiny shards: its metrics (of z and of h), their bounds, that measuring leaves training
untouched, and that it never reads the test split."""

from pathlib import Path

import torch

from simclr_hpc.config import load_config
from simclr_hpc.models import ProjectionHead, SimCLRModel, build_backbone
from simclr_hpc.train.monitor import PretrainMonitor
from tests.conftest import tiny_overrides


def test_monitor_measures_knn_and_contrastive_properties_without_touching_rng_or_mode(tiny_shards, tmp_path):
    from contextlib import nullcontext

    cfg = load_config(
        overrides=tiny_overrides(tiny_shards, tmp_path)
        + ["pretrain.monitor_bank_images=80", "pretrain.monitor_eval_images=40", "pretrain.monitor_pairs=16"]
    )
    monitor = PretrainMonitor(cfg, torch.device("cpu"), nullcontext)
    assert len(monitor.bank) == 80 and len(monitor.queries) <= 40 and len(monitor.x_a) == len(monitor.x_b) == 16
    assert sorted(torch.bincount(monitor.bank_labels).tolist()) == [20, 20, 20, 20]  # class-balanced bank
    torch.manual_seed(0)
    encoder = build_backbone("resnet18", True, 0.125)
    model = SimCLRModel(encoder, ProjectionHead(encoder.feat_dim, 32, 16, 2)).train()
    rng_before = torch.get_rng_state()
    first, second = monitor.measure(model), monitor.measure(model)
    assert torch.equal(torch.get_rng_state(), rng_before) and model.training
    for measured in (first, second):
        assert measured.pop("monitor_s") > 0 and measured.pop("monitor_cpu_s") > 0
    assert first == second  # fixed images, fixed views: the same model gives the same numbers
    assert set(first) >= {"knn_top1_k20", "knn_top1_k200", "alignment", "uniformity", "embed_std", "positive_rank1"}
    assert 0.0 <= first["knn_top1_k20"] <= 1.0 and 0.0 <= first["alignment"] <= 4.0
    assert -4.0 - 1e-6 <= first["uniformity"] <= 0.0 and 0.0 <= first["positive_rank1"] <= 1.0
    assert first["knn_bank_images"] == 80 and "knn_top5_k20" not in first  # 4 classes: no top-5
    # the same four properties of the encoder output h, the space a linear probe reads
    assert 0.0 <= first["alignment_h"] <= 4.0 and -4.0 - 1e-6 <= first["uniformity_h"] <= 0.0
    assert first["alignment_h"] != first["alignment"] and {"embed_std_h", "positive_rank1_h"} <= set(first)
    # tiny_shards have no val split: the queries are training images outside the bank
    assert monitor.query_split == "train"


def test_without_a_val_split_the_queries_are_training_images_outside_the_bank(tiny_shards):
    from simclr_hpc.data.shards import read_index
    from simclr_hpc.train.monitor import monitor_splits

    cfg = load_config(overrides=[f"data.shards={tiny_shards}"])
    bank, split, queries = monitor_splits(read_index(tiny_shards), cfg.data, 80, 40)
    assert split == "train" and len(bank) == 80 and 36 <= len(queries) <= 44 and not set(bank) & set(queries)


def test_the_monitor_never_reads_the_test_split(tmp_path, monkeypatch):
    """Shards with a val split whose test shards may not be read: a monitored pretrain still runs, its queries from
    val. (The shards stay on disk: a run checks every shard of its index before it starts.)"""
    import json

    from simclr_hpc.data import shard_reader
    from simclr_hpc.data.shards import read_index, write_shards
    from simclr_hpc.train.runner import run_stage

    shards = tmp_path / "shapes4"
    write_shards("shapes:4:40:16", shards, val_fraction=0.2, shard_size=64, seed=0)
    read_tar = shard_reader.iter_tar_samples

    def no_test_split(path, *args, **kwargs):
        assert not Path(path).name.startswith("test-"), f"the run read the test split: {path}"
        return read_tar(path, *args, **kwargs)

    monkeypatch.setattr(shard_reader, "iter_tar_samples", no_test_split)  # any read of the test split now fails
    assert "test" in read_index(shards).splits
    overrides = tiny_overrides(shards, tmp_path, steps=2) + [
        "run.name=watched",
        "pretrain.monitor_every_steps=1",
        "pretrain.monitor_bank_images=60",
        "pretrain.monitor_eval_images=20",
        "pretrain.monitor_pairs=8",
    ]
    result = run_stage("pretrain", load_config(None, overrides))
    m = result["metrics"]
    assert m["monitor_split"] == "val" and m["knn_eval_images"] <= len(read_index(shards).splits["val"].keys)
    lines = [json.loads(line) for line in open(f"{result['run_dir']}/metrics.jsonl")]
    assert [line["step"] for line in lines] == [1, 2] and all("uniformity_h" in line for line in lines)
