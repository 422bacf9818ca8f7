"""The pretraining monitor on tiny shards: its metrics, their bounds, and that measuring leaves training untouched."""

import torch

from simclr_hpc.config import load_config
from simclr_hpc.models import ProjectionHead, SimCLRModel, build_backbone
from simclr_hpc.train.monitor import PretrainMonitor
from tests.conftest import tiny_overrides

def test_monitor_measures_knn_and_contrastive_properties_without_touching_rng_or_mode(tiny_shards, tmp_path):
    from contextlib import nullcontext

    cfg = load_config(overrides=tiny_overrides(tiny_shards, tmp_path) + [
        "pretrain.monitor_bank_images=80", "pretrain.monitor_eval_images=40", "pretrain.monitor_pairs=16"])
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
