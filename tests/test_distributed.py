"""Two processes on gloo must compute what one process computes: world size, loss, gradients, parameters."""

import shutil

import pytest
import torch

from tests.distributed_helpers import run_ranks

pytestmark = pytest.mark.dist


def test_world_size_really_is_two_in_both_processes(tmp_path):
    outs = run_ranks("world", 2, tmp_path)
    assert [o["rank"] for o in outs] == [0, 1]
    assert all(o["world_size"] == 2 for o in outs)
    assert all(o["sum"] == 3.0 for o in outs)  # 1 + 2: the processes really talk to each other


@pytest.mark.parametrize("n,tau", [(8, 0.5), (32, 0.1)])
def test_nt_xent_two_ranks_matches_one_process_value_and_gradients(tmp_path, n, tau):
    args = {"n": n, "d": 16, "tau": tau}
    (one,) = run_ranks("ntxent", 1, tmp_path, args)
    two = run_ranks("ntxent", 2, tmp_path, args)
    # The job's loss is the mean of the ranks' losses (what DDP's gradient averaging optimises).
    assert torch.stack([o["loss"] for o in two]).mean().item() == pytest.approx(one["loss"].item(), rel=1e-5)
    # Each rank's gradient is the sum over ranks' losses: divided by the world size it is the 1-process gradient.
    for name in ("grad_a", "grad_b"):
        joined = torch.cat([o[name] for o in two]) / 2
        torch.testing.assert_close(joined, one[name], rtol=1e-4, atol=1e-7)


TRAIN = [
    "model.backbone=resnet18",
    "model.width=0.125",
    "model.cifar_stem=true",
    "train.global_batch=16",
    "optim.base_lr=0.5",
    "optim.lr_scaling=none",
    "optim.weight_decay=1e-4",
]


@pytest.mark.parametrize(
    "engine",
    [
        ["dist.engine=ddp", "optim.name=lars"],
        ["dist.engine=deepspeed", "dist.zero_stage=1", "optim.name=sgd"],
        ["dist.engine=deepspeed", "dist.zero_stage=2", "optim.name=sgd"],
    ],
    ids=["ddp-lars", "zero1-sgd", "zero2-sgd"],
)
def test_two_ranks_half_batch_train_to_same_parameters_as_one_rank(tmp_path, engine):
    args = {"overrides": TRAIN + engine, "steps": 3}
    (one,) = run_ranks("train", 1, tmp_path, args)
    two = run_ranks("train", 2, tmp_path, args)
    assert one["losses"][0] == pytest.approx(two[0]["losses"][0], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0] + 1.0  # it trained, and did not blow up
    for name, ref in one["params"].items():
        # float32 sums in a different order, amplified by lr 0.5: stated tolerance 1e-4 relative / 2e-5 absolute
        # after 3 steps (seen: at most 5e-6 on BN parameters of size ~1).
        torch.testing.assert_close(two[0]["params"][name], ref, rtol=1e-4, atol=2e-5, msg=name)
        torch.testing.assert_close(two[1]["params"][name], ref, rtol=1e-4, atol=2e-5, msg=name)


@pytest.mark.parametrize("stage,optim", [(2, "adamw"), (1, "sgd")], ids=["zero2-adamw", "zero1-sgd"])
def test_deepspeed_resume_restores_the_sharded_optimizer_state_bitwise(tiny_shards, tmp_path, stage, optim):
    """2 ranks under ZeRO: a run rewound to its step-2 checkpoint and resumed ends bitwise where the whole run ended.

    Adam's moments and SGD's momentum live in flat per-rank partitions under ZeRO; the checkpoint holds them gathered
    into torch's own format, and resume scatters them back. Without that, the resumed steps would differ."""
    from simclr_hpc.train import checkpoint as ckpt
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(tiny_shards, tmp_path, steps=4) + [
        "dist.engine=deepspeed",
        f"dist.zero_stage={stage}",
        f"optim.name={optim}",
        "optim.base_lr=0.01",
        "optim.lr_scaling=none",
        "run.name=zero",
    ]
    args = {"stage": "pretrain", "overrides": overrides}
    run_ranks("stage", 2, tmp_path, args)
    root = tmp_path / "t" / "pretrain" / "zero" / "checkpoints"
    whole = ckpt.load_state(root / "step-00000004")["model"]
    saved = ckpt.load_state(root / "step-00000002")["optimizer"]
    key = "exp_avg" if optim == "adamw" else "momentum_buffer"
    n_params = sum(len(g["params"]) for g in saved["param_groups"])
    assert len(saved["state"]) == n_params and all(s[key].abs().sum() > 0 for s in saved["state"].values())

    # Rewind: what a job killed right after its step-2 checkpoint leaves behind.
    shutil.rmtree(root / "step-00000004")
    (root / "latest").unlink()
    (root / "latest").symlink_to("step-00000002")
    (root.parent / "result.json").unlink()
    run_ranks("stage", 2, tmp_path, args)
    resumed = ckpt.load_state(root / "step-00000004")["model"]
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), f"{name} differs after resume"


def _assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, entry in a["state"].items():
        assert entry.keys() == b["state"][index].keys()
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][key])), (index, key)


def test_zero_optimizer_state_moves_between_world_sizes_exactly(tmp_path):
    """A requeued job may land on another number of nodes: ZeRO-2 state gathered on 2 ranks and scattered onto 1 rank's
    partition gathers back to the very same tensors."""
    overrides = TRAIN + ["dist.engine=deepspeed", "dist.zero_stage=2", "optim.name=adamw"]
    saved = run_ranks("zero_state", 2, tmp_path, {"overrides": overrides})
    state = saved[0]["state"]
    _assert_same_optimizer_state(saved[1]["state"], state)  # every rank holds the whole state
    assert state["state"] and all(s["exp_avg"].abs().sum() > 0 for s in state["state"].values())
    path = tmp_path / "zero2-state.pt"
    torch.save(state, path)
    # (Scattering back onto 2 ranks is covered bitwise by the resume test above.)
    (one,) = run_ranks("zero_state", 1, tmp_path, {"overrides": overrides, "load": str(path)})
    _assert_same_optimizer_state(one["state"], state)


@pytest.fixture(scope="module")
def ddp_lars_reference(tmp_path_factory):
    """One rank of DDP with LARS: every parameter's own trust ratio, over whole tensors."""
    tmp = tmp_path_factory.mktemp("ddp-lars")
    return run_ranks("train", 1, tmp, {"overrides": TRAIN + ["dist.engine=ddp", "optim.name=lars"], "steps": 2})[0]


@pytest.mark.parametrize("stage", [1, 2], ids=["zero1", "zero2"])
def test_lars_under_zero_takes_ddps_per_parameter_trust_ratios(tmp_path, ddp_lars_reference, stage):
    """ZeRO hands the optimizer one flat partition per group and rank, slices of many layers; LARS maps it back to
    parameters (norms of each parameter's slices summed over the ranks), so 2 ZeRO ranks step like DDP. Without the
    mapping the trust ratio would be one norm over a whole partition, different with every world size."""
    overrides = TRAIN + ["dist.engine=deepspeed", f"dist.zero_stage={stage}", "optim.name=lars"]
    zero = run_ranks("train", 2, tmp_path, {"overrides": overrides, "steps": 2})
    for name, ref in ddp_lars_reference["params"].items():
        # float32 sums in another order (per-slice norms summed over ranks), amplified by lr 0.5: as above.
        torch.testing.assert_close(zero[0]["params"][name], ref, rtol=1e-4, atol=2e-5, msg=name)
        torch.testing.assert_close(zero[1]["params"][name], ref, rtol=1e-4, atol=2e-5, msg=name)


@pytest.mark.parametrize("stage", [0, 2], ids=["zero0-unfused", "zero2-flat"])
def test_deepspeed_bf16_resumes_bitwise_from_fp32_masters_and_exports_fp32(tiny_shards, tmp_path, stage):
    """DeepSpeed bf16 on CPU (its CPU backend has bf16): the module holds bf16 copies; the checkpoint holds the fp32
    masters (ZeRO 0: DeepSpeed's per-parameter fp32 copies; ZeRO 2: its flat partitions) and the optimizer state in
    torch's own format, so a rewound run resumes bitwise, the export is the fp32 masters, and a DDP run could load
    the optimizer state. One rank each (the 2-rank flat partitions resume bitwise in fp32 above)."""
    from simclr_hpc.config import load_config
    from simclr_hpc.models import build_simclr
    from simclr_hpc.train import checkpoint as ckpt
    from simclr_hpc.train.optim import build_optimizer
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(tiny_shards, tmp_path, steps=4) + [
        "dist.engine=deepspeed",
        f"dist.zero_stage={stage}",
        "train.precision=bf16",
        "optim.name=lars",
        "log.backends=[jsonl]",
        "run.name=bf16",
    ]
    args = {"stage": "pretrain", "overrides": overrides}
    run_ranks("stage", 1, tmp_path, args)
    root = tmp_path / "t" / "pretrain" / "bf16" / "checkpoints"
    final = ckpt.load_state(root / "step-00000004")
    weights = {k: v for k, v in final["export"].items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 for v in weights.values())
    # Masters, not bf16 copies cast up: some values need more than bf16's 8 bits of mantissa.
    assert any(not torch.equal(v, v.bfloat16().float()) for v in weights.values())
    assert all(torch.equal(final["export"][k], final["model"][k]) for k in weights)
    cfg = load_config(overrides=overrides)
    model = build_simclr(cfg.model)
    optimizer = build_optimizer(model, cfg.optim, 0.1)
    optimizer.load_state_dict(final["optimizer"])  # torch's own format: the DDP engine resumes from it as is
    assert all("momentum_buffer" in s for s in optimizer.state.values()) and len(optimizer.state) == len(
        list(model.parameters())
    )

    shutil.rmtree(root / "step-00000004")
    (root / "latest").unlink()
    (root / "latest").symlink_to("step-00000002")
    (root.parent / "result.json").unlink()
    run_ranks("stage", 1, tmp_path, args)
    resumed = ckpt.load_state(root / "step-00000004")
    for name in final["model"]:
        assert torch.equal(final["model"][name], resumed["model"][name]), f"{name} differs after resume"
