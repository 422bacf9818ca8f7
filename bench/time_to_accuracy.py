"""Time to accuracy: pretraining seconds until a kNN probe on held-out mnist5k images first reaches a fixed top-1.

Ours: ``run_stage("pretrain", cfg)`` (what ``simclr-hpc run pretrain`` calls) with ``configs/pretrain/tiny-cpu.yaml``
at the demo's crop scale and learning rate, on mnist5k shards with a stratified val split, checkpointing every
``eval_every`` steps; afterwards each checkpoint's encoder is probed, and its time is the wall time from just before
``run_stage`` to that step's ``metrics.jsonl`` line (so model build, loader start-up, the per-segment loader restarts
and the checkpoint writes all count against ours). Lightly: the lightly package's SimCLR example recipe
(``SimCLRTransform`` at the same input size, no blur as for CIFAR, ``SimCLRProjectionHead``, ``NTXentLoss`` at its
default temperature 0.5, SGD lr 0.06, momentum 0.9, weight decay 5e-4) in a plain torch loop over the same training
images; its clock stops while it is probed. Same backbone (our ResNet-18
at the same width and stem), batch, image size, DataLoader workers and threads; one fresh subprocess each.

The probe: cosine kNN, k = 20, temperature-weighted votes (t = 0.07, as in InstDisc), bank = the train split's encoder
features (deterministic centre view), queries = the val split. Each side stops at ``max_steps``. The vote is the package's
(``simclr_hpc.train.knn``), so both sides are scored by the protocol the reports use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, Row, log

# The demo's pretraining recipe (configs/studies/demo-learning.yaml) on tiny-cpu.yaml. The target: at 600 steps of it, kNN on
# the val split reached 85.3 % at step 200, 86.4 % at the end; a random-init encoder of the same architecture 75.4 %
# (raw pixels 90.8 %: a kNN on 784 pixels is strong on MNIST, which is why the target is not 90 %).
SETTINGS = dict(
    width=0.25,
    size=28,
    crop=0.3,
    lr=0.004,
    batch=128,
    max_steps=300,
    eval_every=25,
    workers=1,
    threads=1,
    target=85.0,
    k=20,
    knn_t=0.07,
    val_fraction=0.2,
    source="mnist5k",
)


def _images(shards: Path, split: str, size: int):
    """(eval-view float tensors, uint8 images, labels) of one split."""
    import torch

    from simclr_hpc.data import augment, pipeline
    from simclr_hpc.data.decode import to_uint8_chw

    views, raw, labels = [], [], []
    evaluate = augment.EvalTransform(size)
    both = lambda img, rng=None: (evaluate(img), to_uint8_chw(img))  # noqa: E731
    for batch in pipeline.eval_loader(shards, split, both, batch_per_device=500):
        views.append(batch["views"][0])
        raw.append(batch["views"][1])
        labels += batch["y"].tolist()
    return torch.cat(views), torch.cat(raw), torch.tensor(labels)


def knn_top1(bank, bank_y, query, query_y, k: int, t: float) -> float:
    """Top-1 (%) of temperature-weighted cosine kNN votes (``simclr_hpc.train.knn``, the package's own protocol)."""
    from simclr_hpc.train.knn import knn_accuracy

    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    return 100 * knn_accuracy(query, query_y, bank, bank_y, num_classes, ks=(k,), temperature=t)[f"knn_top1_k{k}"]


class Probe:
    """kNN top-1 of an encoder on the val split, with the train split as the bank."""

    def __init__(self, shards: Path, s: dict):
        self.s = s
        self.bank_x, self.train_raw, self.bank_y = _images(shards, "train", s["size"])
        self.query_x, _, self.query_y = _images(shards, "val", s["size"])

    def __call__(self, encoder) -> float:
        import torch

        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            bank, query = (
                torch.cat([encoder(x[i : i + 500]).float() for i in range(0, len(x), 500)])
                for x in (self.bank_x, self.query_x)
            )
            acc = knn_top1(bank, self.bank_y, query, self.query_y, self.s["k"], self.s["knn_t"])
        encoder.train(was_training)
        return acc


def _ours(shards: Path, out: Path, s: dict) -> list[tuple[int, float, float]]:
    from simclr_hpc.config import load_config
    from simclr_hpc.models.build import build_simclr
    from simclr_hpc.train import checkpoint as ckpt
    from simclr_hpc.train.runner import run_stage

    probe = Probe(shards, s)
    cfg = load_config(
        REPO / "configs/pretrain/tiny-cpu.yaml",
        [
            f"run.root={out}",
            "run.name=ours",
            f"data.shards={shards}",
            f"data.image_size={s['size']}",
            f"data.num_workers={s['workers']}",
            f"model.width={s['width']}",
            f"data.crop_min_scale={s['crop']}",
            f"optim.base_lr={s['lr']}",
            f"train.global_batch={s['batch']}",
            f"train.steps={s['max_steps']}",
            f"train.ckpt_every_steps={s['eval_every']}",
            f"train.log_every_steps={s['eval_every']}",
            f"train.keep_checkpoints={s['max_steps'] // s['eval_every'] + 1}",
        ],
    )
    t0 = time.time()
    run_stage("pretrain", cfg)
    run_dir = out / cfg.run.study / "pretrain" / "ours"
    stamps = {r["step"]: r["time"] - t0 for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    curve = []
    for path in sorted((run_dir / "checkpoints").glob("step-*")):
        step = int(path.name.split("-")[1])
        model = build_simclr(cfg.model)
        model.load_state_dict(ckpt.load_state(path)["model"])
        curve.append((step, stamps[step], probe(model.encoder)))
        if curve[-1][2] >= s["target"]:
            break
    return curve


def _lightly(shards: Path, out: Path, s: dict) -> list[tuple[int, float, float]]:
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from simclr_hpc.models import build_backbone

    probe = Probe(shards, s)

    class Images(Dataset):
        def __init__(self, raw, labels, transform):
            self.raw, self.labels, self.transform = raw, labels, transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            img = Image.fromarray(self.raw[i].permute(1, 2, 0).numpy()).convert("RGB")
            return self.transform(img), int(self.labels[i])

    t0 = time.perf_counter()
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", cifar_stem=False, width=s["width"])
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(backbone.feat_dim, backbone.feat_dim, 128)).train()
    loader = DataLoader(
        Images(probe.train_raw, probe.bank_y, SimCLRTransform(input_size=s["size"], gaussian_blur=0.0)),
        batch_size=s["batch"],
        shuffle=True,
        num_workers=s["workers"],
        drop_last=True,
    )
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    step, paused, curve = 0, 0.0, []
    while step < s["max_steps"]:
        for (x0, x1), _ in loader:
            loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step % s["eval_every"] == 0:
                t_pause = time.perf_counter()
                curve.append((step, t_pause - t0 - paused, probe(backbone)))
                paused += time.perf_counter() - t_pause
                if curve[-1][2] >= s["target"]:
                    return curve
            if step == s["max_steps"]:
                break
    return curve


def _child(which: str, shards: str, out: str, settings: str) -> None:
    import torch

    s = json.loads(settings)
    torch.set_num_threads(s["threads"])
    fn = {"ours": _ours, "lightly": _lightly}[which]
    print(json.dumps(fn(Path(shards), Path(out), s)))


def _spawn(which: str, shards: Path, out: Path, s: dict) -> list:
    cmd = [sys.executable, "-m", "bench.time_to_accuracy", "--child", which, str(shards), str(out), json.dumps(s)]
    env = {**os.environ, "OMP_NUM_THREADS": str(s["threads"])}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"time_to_accuracy {which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _first(curve: list, target: float) -> tuple[int, float] | None:
    return next(((step, secs) for step, secs, acc in curve if acc >= target), None)


def _curve(curve: list) -> str:
    return ", ".join(f"{step}:{acc:.1f}%@{secs:.0f}s" for step, secs, acc in curve)


def run(**overrides) -> list[Row]:
    s = {**SETTINGS, **overrides}
    with tempfile.TemporaryDirectory(prefix="bench-tta-") as tmp:
        shards = Path(tmp) / "shards"
        cmd = [
            sys.executable,
            "-m",
            "simclr_hpc.cli.main",
            "data",
            "shards",
            s["source"],
            str(shards),
            "--val-fraction",
            str(s["val_fraction"]),
        ]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        load = os.getloadavg()[0]
        curves = {which: _spawn(which, shards, Path(tmp) / "runs", s) for which in ("ours", "lightly")}
    log(f"time_to_accuracy: {json.dumps(curves)}")
    hit = {which: _first(c, s["target"]) for which, c in curves.items()}
    ours = hit["ours"][1] if hit["ours"] else None
    theirs = hit["lightly"][1] if hit["lightly"] else None
    ratio = ours / theirs if ours and theirs else None
    note = (
        f"ResNet-18 w{s['width']} no CIFAR stem, ours crops >= {s['crop']} AdamW lr {s['lr']} temperature 0.2, "
        f"lightly crops >= 0.08 SGD lr 0.06 temperature 0.5, {s['size']}px, batch {s['batch']}, "
        f"{s['workers']} loader worker, "
        f"{s['threads']} thread; kNN k={s['k']} on the val split every {s['eval_every']} steps, up to "
        f"{s['max_steps']} steps; load {load:.1f} at start. Curves (step:kNN@s): ours {_curve(curves['ours'])}; "
        f"lightly {_curve(curves['lightly'])}"
    )
    if ratio is None:
        missing = [w for w, h in hit.items() if h is None]
        note = (
            f"not measured as a ratio: {' and '.join(missing)} never reached {s['target']}% within "
            f"{s['max_steps']} steps. " + note
        )
        if ours and not theirs:  # lightly's whole budget is a lower bound on its time: the ratio is at most this
            theirs = curves["lightly"][-1][1]
            ratio = ours / theirs
            note = f"upper bound (lightly's time is at least its {s['max_steps']}-step run). " + note
    return [
        Row(
            "time_to_accuracy",
            f"{s['source']} kNN top-1 >= {s['target']:.0f}%",
            "pretrain seconds",
            ours,
            theirs,
            ratio,
            "<= 0.7",
            note,
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
    else:
        for row in run():
            print(row.as_dict())
