"""Two checks, runnable without a GPU, that every tensor a training step or a monitor creates lives on the device of
its inputs (the class of bug that made ``positive_rank1`` fail on the first monitored step on CUDA).

1. :func:`ast_findings`: a static pass over the GPU-path functions (:data:`GPU_PATH`). A tensor factory
   (``torch.arange``, ``zeros``, ``tensor``, ...) called without ``device=`` there is a finding, unless it makes a 0-dim
   scalar (``torch.tensor(float(x))``: a CPU scalar mixes with tensors of any device), its result is moved at once
   (``torch.zeros(3).to(x.device)``), or :data:`HOST_TENSORS` names it as a host tensor on purpose, with the reason.
2. :func:`fake_cuda`: a context in which ``device="cuda"`` makes FakeTensors on a simulated CUDA device (torch's
   ``FakeTensorMode``: shapes, dtypes and devices propagate; no memory, no kernels, no GPU needed). An op that mixes a
   CPU tensor (other than a 0-dim scalar) with a CUDA one raises ``FakeTensorDeviceMismatchError`` there, exactly where
   a GPU would raise. Host reads (``float(t)``, ``t.item()``) return a placeholder so the code after them runs too.
   Forward passes only: autograd's engine needs a real device, so a ``backward`` must not run inside.
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parents[1] / "simclr_hpc"
CUDA = torch.device("cuda", 0)

FACTORIES = frozenset(
    {
        "arange",
        "zeros",
        "ones",
        "empty",
        "full",
        "tensor",
        "as_tensor",
        "randn",
        "rand",
        "randint",
        "randperm",
        "eye",
        "linspace",
        "logspace",
        "normal",
    }
)

GPU_PATH: dict[str, frozenset[str] | None] = {
    "losses.py": None,
    "distributed.py": None,
    "train/embedding.py": None,
    "train/knn.py": None,
    "train/monitor.py": None,
    "train/loop.py": None,
    "train/optim.py": None,
    "train/precision.py": None,
    "train/preempt.py": None,
    "train/engine.py": None,
    "train/engine_ddp.py": None,
    "train/engine_deepspeed.py": None,
    "train/zero_state.py": None,
    "train/evaluate.py": None,
    "train/probe.py": None,
    "train/stages/pretrain.py": None,
    "train/stages/supervised.py": None,
    "train/stages/distill.py": None,
    # data/: only the device half of the augmentation runs on the GPU; the rest runs in loader workers, on the CPU.
    "data/augment.py": frozenset({"finish_on_device", "_blur_batch", "finish_views"}),
    "data/device_decode.py": frozenset({"finish"}),
    "data/blur.py": frozenset({"gaussian_kernels", "blur_channels"}),
    "data/colour.py": frozenset({"normalise_affine"}),
}
"""Module (relative to the package) -> the functions that run on the training device (None: every function)."""

HOST_TENSORS: dict[tuple[str, str, str], str] = {
    ("train/evaluate.py", "topk_counts", "zeros"): "host counters: the logits are moved to the CPU to be counted",
    ("train/evaluate.py", "topk_counts", "tensor"): "host counters: the logits are moved to the CPU to be counted",
    ("train/evaluate.py", "logits_metrics", "tensor"): "host counters, summed over ranks",
    ("train/evaluate.py", "local_features", "zeros"): "an empty share: features are kept on the CPU",
    ("train/evaluate.py", "gather_rows", "zeros"): "host rows and shapes, summed over ranks",
    ("train/evaluate.py", "gather_rows", "tensor"): "host rows and shapes, summed over ranks",
    ("train/knn.py", "knn_scores", "zeros"): "the empty result when there is no query: nothing to mix with",
    ("train/knn.py", "knn_hits", "zeros"): "host counters: float(...) of each chunk's hits",
    ("train/stages/supervised.py", "_probe_metrics", "zeros"): "empty logits beside the CPU eval features",
}
"""(module, function, factory) -> why that tensor lives on the host on purpose."""


def _scalar(node: ast.expr) -> bool:
    """An expression that is a Python number: a constant, ``float(..)``/``int(..)``/``len(..)``, or arithmetic of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, bool))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("float", "int", "bool", "len")
    if isinstance(node, ast.UnaryOp):
        return _scalar(node.operand)
    if isinstance(node, ast.BinOp):
        return _scalar(node.left) and _scalar(node.right)
    return False


def _allowed(call: ast.Call, parent: ast.AST | None) -> bool:
    if any(k.arg == "device" for k in call.keywords):
        return True
    if call.func.attr in ("tensor", "as_tensor") and len(call.args) == 1 and _scalar(call.args[0]):
        return True  # a 0-dim CPU scalar: legal beside tensors on every device
    return isinstance(parent, ast.Attribute) and parent.attr in ("to", "cuda")


def _functions(tree: ast.AST):
    """(qualified name, function node) of every function and method, nested ones included."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{child.name}", child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _torch_call(node: ast.AST) -> str | None:
    """``"zeros"`` for a call ``torch.zeros(...)``; None for any other node."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        return node.func.attr if node.func.value.id == "torch" else None
    return None


def source_findings(source: str, module: str, only: frozenset[str] | None = None) -> list[str]:
    """Findings in one module's ``source`` (``module``: its path under the package, for messages and HOST_TENSORS)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for name, fn in _functions(tree):
        short = name.rsplit(".", 1)[-1]
        if only is not None and short not in only:
            continue
        nested = {
            id(n) for sub in ast.walk(fn) if sub is not fn and isinstance(sub, ast.FunctionDef) for n in ast.walk(sub)
        }
        for node in ast.walk(fn):
            factory = _torch_call(node)
            if id(node) in nested or factory not in FACTORIES:
                continue
            if _allowed(node, parents.get(node)) or (module, short, factory) in HOST_TENSORS:
                continue
            found.append(
                f"{module}:{node.lineno} {name}: torch.{factory}(...) without device= (use the device of "
                f"the inputs, e.g. device=x.device; a host tensor on purpose: device='cpu', or its reason "
                f"in tests/device_audit.py HOST_TENSORS)"
            )
    return found


def ast_findings(package: Path = PACKAGE) -> list[str]:
    """Every finding over :data:`GPU_PATH` in ``package``, and every :data:`HOST_TENSORS` allowance that no longer
    names a call in the code (an allowance outliving its code would excuse the next one written there)."""
    found = []
    for module, only in GPU_PATH.items():
        found += source_findings((package / module).read_text(), module, only)
    calls = set()
    for module in {key[0] for key in HOST_TENSORS}:
        for name, fn in _functions(ast.parse((package / module).read_text())):
            calls |= {(module, name.rsplit(".", 1)[-1], _torch_call(node)) for node in ast.walk(fn)}
    found += [
        f"{m}: {f}: torch.{c}: a HOST_TENSORS allowance with no such call; remove it"
        for m, f, c in HOST_TENSORS
        if (m, f, c) not in calls
    ]
    return found


class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Answers host reads of fake tensors with a placeholder (0.5, or 1 for integers and booleans)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            return 0.5 if args[0].dtype.is_floating_point else 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def fake_cuda():
    """Run the body with a simulated CUDA device (see the module docstring). Build modules inside it under
    ``with torch.device("cuda"):`` (``module.to("cuda")`` cannot convert real parameters to fake ones)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    # A shape environment lets data-dependent shapes through (``logits[mask]``) as symbolic sizes.
    shapes = ShapeEnv(allow_dynamic_output_shape_ops=True)
    with FakeTensorMode(allow_non_fake_inputs=True, shape_env=shapes), _HostReads():
        yield


def device_mismatch_error() -> type[Exception]:
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    return FakeTensorDeviceMismatchError


class FakeCudaEngine:
    """What a step needs of an Engine, on the simulated device. ``backward`` records the loss instead of running:
    autograd's engine needs a real GPU."""

    device, rank, world_size, cuda = CUDA, 0, 1, True

    def __init__(self):
        self.losses = []

    def autocast(self):
        return contextlib.nullcontext()

    def no_sync(self, model, last):
        return contextlib.nullcontext()

    def backward(self, loss):
        self.losses.append(loss)

    def unwrap(self, model):
        return model
