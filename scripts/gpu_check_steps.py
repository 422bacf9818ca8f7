"""The checks ``scripts/gpu_checks.py`` runs, one process each: ``run(name, cuda, out)``. A check raises (or fails an
assert) to fail, and prints ``NOTE: ...`` lines for the summary (figures, what it compared). Here: the sizes, the data,
and the checks that go through the command line; the engine-level ones are in ``gpu_check_engines.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "simclr_hpc.cli.main"]


class Sizes:
    """What a check trains: small on a GPU, tiny on the CPU (--no-cuda)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.batch, self.size, self.width = (64, 32, 0.25) if cuda else (16, 16, 0.125)
        self.shapes = "shapes:4:64:32" if cuda else "shapes:4:40:16"


def note(text: str) -> None:
    print(f"NOTE: {text}", flush=True)


def prepare_data(cuda: bool, out: Path) -> None:
    """The generated shards every CLI check reads (built once, by the driver)."""
    shards = out / "shards"
    if not (shards / "index.json").exists():
        shutil.rmtree(shards, ignore_errors=True)
        subprocess.run(
            [*CLI, "data", "shards", Sizes(cuda).shapes, str(shards)], cwd=REPO, check=True, capture_output=True
        )


def _overrides(s: Sizes, out: Path, *extra: str) -> list[str]:
    return [
        f"run.root={out}/runs",
        "run.study=gpu",
        f"data.shards={out}/shards",
        f"data.image_size={s.size}",
        f"data.num_workers={2 if s.cuda else 0}",
        "model.backbone=resnet18",
        f"model.width={s.width}",
        f"train.global_batch={s.batch}",
        "train.log_every_steps=1",
        "train.eval_batch_per_device=64",
        "optim.warmup_steps=1",
        "log.backends=[jsonl]",
        *extra,
    ]


def _cli(*args: str) -> str:
    proc = subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"simclr-hpc {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def check_doctor(s: Sizes, out: Path) -> None:
    said = _cli("doctor", "--offline", "--run-root", str(out / "runs"))
    for line in said.splitlines():
        if line.split()[1:2] and line.split()[1].startswith(("gpu", "nccl")) or line.startswith("doctor:"):
            note(" ".join(line.split()))


def check_wheels(s: Sizes, out: Path) -> None:
    import importlib

    site = os.environ.get("SIMCLR_GPU_SITE")  # the --target directory gpu_check.sh installed .whl/ into
    for name in ("pydantic", "pydantic_core", "submitit", "webdataset", "deepspeed", "pytest"):
        module = importlib.import_module(name)
        where = Path(module.__file__).resolve()
        assert not site or Path(site).resolve() in where.parents or "pytest" in name, f"{name} from {where}, not {site}"
        note(f"{name} {getattr(module, '__version__', '?')} from {where.parent.parent}")


def check_device_audit(s: Sizes, out: Path) -> None:
    import torch

    from simclr_hpc.config import load_config
    from simclr_hpc.models import build_simclr
    from simclr_hpc.train.embedding import contrastive_properties
    from simclr_hpc.train.stages import PretrainTask
    from simclr_hpc.train.task import StageContext
    from tests.device_audit import CUDA, FakeCudaEngine, ast_findings, fake_cuda

    assert ast_findings() == [], ast_findings()
    cfg = load_config(overrides=["model.width=0.125", "data.image_size=16"])
    ctx = StageContext(cfg, FakeCudaEngine(), out, 8, 8, 1)
    with fake_cuda():
        z = torch.randn(8, 16, device="cuda")
        contrastive_properties(z, z + 1)
        with torch.device("cuda"):
            model = build_simclr(cfg.model)
        assert PretrainTask(ctx).step(model, {"views": (torch.randn(8, 3, 16, 16),) * 2}).device == CUDA
    note("static check clean; embedding properties and the pretrain step ran on a simulated CUDA device")


def check_pinned(s: Sizes, out: Path) -> None:
    from simclr_hpc.data import augment, pipeline

    loader = pipeline.train_loader(
        out / "shards",
        "train",
        augment.SimCLRViews(s.size, "cifar"),
        batch_per_device=8,
        seed=0,
        num_workers=2,
        total_steps=1,
    )
    batch = next(iter(loader))
    assert all(v.is_pinned() for v in batch["views"]), "training batches are not in pinned memory"
    note("training views arrive pinned: the step's non_blocking copies overlap")


def _pretrain(s: Sizes, out: Path, name: str, *extra: str) -> Path:
    """A CLI pretrain of 4 steps (monitoring every 2, gradient caching at a quarter of the batch, a checkpoint every
    2), rewound to its step-2 checkpoint and run again: it must resume, and its export must load into a plain model."""
    overrides = _overrides(
        s,
        out,
        f"run.name={name}",
        "train.steps=4",
        "train.ckpt_every_steps=2",
        "pretrain.monitor_every_steps=2",
        "pretrain.monitor_bank_images=64",
        "pretrain.monitor_eval_images=32",
        "pretrain.monitor_pairs=16",
        f"train.max_batch_per_device={s.batch // 4}",
        *extra,
    )
    _cli("run", "pretrain", *_sets(overrides))
    run_dir = out / "runs" / "gpu" / "pretrain" / name
    ckpts = run_dir / "checkpoints"
    shutil.rmtree(ckpts / "step-00000004")
    (ckpts / "latest").unlink()
    (ckpts / "latest").symlink_to("step-00000002")
    (run_dir / "result.json").unlink()
    said = _cli("run", "pretrain", *_sets(overrides))
    assert "resuming" in said and "step-00000002" in said, said[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    import torch

    from simclr_hpc.config import load_config
    from simclr_hpc.models import build_simclr

    exported = torch.load(ckpts / "step-00000004" / "state.pt", weights_only=True)["export"]
    build_simclr(load_config(overrides=overrides).model).load_state_dict(exported)  # strict: plain keys, no wrapper
    note(
        f"{name}: {result['device']}, {result['images_per_s']:.0f} img/s, knn top-1 "
        f"{result['metrics'].get('knn_top1_k20')}, resumed from step 2"
    )
    return run_dir


def check_pretrain_cli(s: Sizes, out: Path) -> None:
    _pretrain(s, out, "p")


def check_pretrain_compile(s: Sizes, out: Path) -> None:
    _pretrain(s, out, "pc", "train.compile=true")


def check_finetune(s: Sizes, out: Path) -> None:
    encoder = out / "runs" / "gpu" / "pretrain" / "p"
    assert (encoder / "result.json").exists(), "needs the pretrain-cli check's run"
    for protocol in ("linear", "full"):
        overrides = _overrides(
            s,
            out,
            f"run.name=f-{protocol}",
            f"finetune.encoder={encoder}",
            "train.steps=4",
            f"finetune.protocol={protocol}",
            "train.ckpt_every_steps=4",
        )
        _cli("run", "finetune", *_sets(overrides))
        result = json.loads((out / "runs" / "gpu" / "finetune" / f"f-{protocol}" / "result.json").read_text())
        note(f"finetune {protocol}: top-1 {result['metrics']['top1']:.3f} on {result['device']}")


def check_bench(s: Sizes, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", *([] if s.cuda else ["--cpu-smoke"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(out)},
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        note(json.dumps(row))
    assert proc.returncode == 0 and rows, proc.stdout[-2000:] + proc.stderr[-2000:]


def check_pytest_gpu(s: Sizes, out: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            "-s",
            "tests/test_gpu.py",
            f"--junitxml={out}/pytest-gpu.xml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("gpu figures:") or " passed" in line or " failed" in line:
            note(line.strip())
    assert proc.returncode == 0, proc.stdout[-3000:]


def run(name: str, cuda: bool, out: Path) -> int:
    """Run the check ``name`` in this process: 0 if it passed (an exception fails it, with its traceback)."""
    import gpu_check_engines as engines

    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    s = Sizes(cuda)
    if name.startswith("step-"):
        engines.check_step(name[5:], s, out)
        return 0
    function = f"check_{name.replace('-', '_')}"
    (getattr(engines, function, None) or globals()[function])(s, out)
    return 0
