"""End to end: a short pretrain from the same images, ours vs the lightly package's own SimCLR recipe.

Ours: ``run_stage("pretrain", cfg)`` (what ``simclr-hpc run pretrain`` calls) over shards of the images, its
``images_per_s`` (training loop wall time, loader start included) and final loss from result.json.
Lightly: ``lightly.transforms.SimCLRTransform`` (same input size, colour strength, no blur as for CIFAR) on a torchvision
``ImageFolder`` of the same images, ``lightly.models.modules.SimCLRProjectionHead``, ``lightly.loss.NTXentLoss``.
Same backbone (ResNet-18, CIFAR stem, same width), batch, steps, DataLoader workers, and optimizer (SGD, momentum 0.9,
constant LR 0.06, weight decay 5e-4: lightly's example recipe; ours is configured to the same). Each run is a fresh
subprocess; the two alternate. images/s counts images (not views) from the loop's start to its last step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, Row, alternate, log, make_imagefolder, make_shards, median

SETTINGS = dict(width=0.125, batch=32, steps=6, workers=1, lr=0.06, wd=5e-4, tau=0.5, size=32, strength=0.5)


def _ours(folder: Path, shards: Path, out: Path, s: dict) -> dict:
    from simclr_hpc.config import load_config
    from simclr_hpc.train.runner import run_stage

    cfg = load_config(
        None,
        [
            f"run.root={out}",
            f"run.name=r{time.monotonic_ns()}",
            f"data.shards={shards}",
            f"data.image_size={s['size']}",
            f"data.color_strength={s['strength']}",
            f"data.num_workers={s['workers']}",
            f"model.width={s['width']}",
            f"train.global_batch={s['batch']}",
            f"train.steps={s['steps']}",
            f"train.ckpt_every_steps={s['steps']}",
            f"train.log_every_steps={s['steps']}",
            "optim.name=sgd",
            f"optim.base_lr={s['lr']}",
            "optim.lr_scaling=none",
            f"optim.weight_decay={s['wd']}",
            "optim.warmup_steps=0",
            "optim.min_lr_ratio=1.0",
            f"pretrain.temperature={s['tau']}",
        ],
    )
    result = run_stage("pretrain", cfg)
    return {"images_per_s": result["images_per_s"], "loss": result["metrics"]["loss"]}


def _lightly(folder: Path, shards: Path, out: Path, s: dict) -> dict:
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from simclr_hpc.models import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet18", cifar_stem=True, width=s["width"])
    head = SimCLRProjectionHead(backbone.feat_dim, backbone.feat_dim, 128)
    model = torch.nn.Sequential(backbone, head).train()
    transform = SimCLRTransform(input_size=s["size"], cj_strength=s["strength"], gaussian_blur=0.0)
    loader = DataLoader(
        ImageFolder(str(folder), transform=transform),
        batch_size=s["batch"],
        shuffle=True,
        num_workers=s["workers"],
        drop_last=True,
    )
    criterion = NTXentLoss(temperature=s["tau"])
    optimizer = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=0.9, weight_decay=s["wd"])
    step, loss_value = 0, float("nan")
    t0 = time.perf_counter()
    while step < s["steps"]:
        for (x0, x1), _ in loader:
            loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss_value = float(loss.item())
            step += 1
            if step == s["steps"]:
                break
    return {"images_per_s": s["steps"] * s["batch"] / (time.perf_counter() - t0), "loss": loss_value}


def _child(which: str, folder: str, shards: str, out: str, settings: str) -> None:
    fn = {"ours": _ours, "lightly": _lightly}[which]
    print(json.dumps(fn(Path(folder), Path(shards), Path(out), json.loads(settings))))


def _spawn(which: str, folder: Path, shards: Path, out: Path, s: dict, record: dict) -> float:
    cmd = [
        sys.executable,
        "-m",
        "bench.end_to_end",
        "--child",
        which,
        str(folder),
        str(shards),
        str(out),
        json.dumps(s),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"end_to_end {which} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    record.setdefault(which, []).append(res)
    return res["images_per_s"]


def run(reps: int = 2, n_images: int = 512, **overrides) -> list[Row]:
    s = {**SETTINGS, **overrides}
    record: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        folder = make_imagefolder(Path(tmp) / "folder", n_images, s["size"], s["size"], "png")
        shards = make_shards(folder, Path(tmp) / "shards", shard_size=128)
        out = Path(tmp) / "runs"
        rates = alternate(
            {w: (lambda w=w: _spawn(w, folder, shards, out, s, record)) for w in ("ours", "lightly")}, reps, warmup=0
        )
    mine, theirs = median(rates["ours"]), median(rates["lightly"])
    loss_ours = median([r["loss"] for r in record["ours"]])
    loss_lightly = median([r["loss"] for r in record["lightly"]])
    equal = abs(loss_ours - loss_lightly) <= 0.05 * abs(loss_lightly)
    log(f"end_to_end: ours {mine:.1f} img/s loss {loss_ours:.4f}; lightly {theirs:.1f} img/s loss {loss_lightly:.4f}")
    note = (
        f"ResNet-18 CIFAR stem width {s['width']}, {s['size']}px PNG, batch {s['batch']}, {s['steps']} steps, "
        f"{s['workers']} worker(s), SGD lr {s['lr']}; final loss ours {loss_ours:.4f} vs lightly {loss_lightly:.4f} "
        f"({'equal within 5 %' if equal else 'NOT equal within 5 %'}); {reps} runs each"
    )
    return [
        Row(
            "end_to_end",
            f"pretrain {s['steps']} steps from shards",
            "images/s",
            mine,
            theirs,
            mine / theirs,
            ">= 1.0",
            note,
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=5)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
    else:
        for row in run():
            print(row.as_dict())
