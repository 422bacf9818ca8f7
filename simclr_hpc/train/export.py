"""Export a finished run's encoder for use outside simclr-hpc: a torchvision state dict, safetensors, or TorchScript.

Formats (``simclr-hpc export RUN --format ...``):

``torchvision``  a plain ``state_dict`` (``torch.save``, loads with ``weights_only=True``) with torchvision's key names,
                 and ``<file>.json`` beside it holding the metadata below. When the run's architecture is torchvision's
                 own (``model.width`` 1 and no ``model.cifar_stem``) it loads with ``strict=True``::

                     model = torchvision.models.resnet18()
                     model.fc = torch.nn.Identity()          # the encoder ends at the pooled features h
                     model.load_state_dict(torch.load(f, weights_only=True))

                 With ``--classifier`` (a fine-tune or distill run whose classifier sits on h) the linear layer is
                 ``fc``, so ``torchvision.models.resnet18(num_classes=K)`` loads it as it is, logits included.
``safetensors``  the same tensors in a ``.safetensors`` file; its metadata holds ``simclr_hpc``: the JSON block below.
``torchscript``  the encoder compiled with ``torch.jit.script`` (no simclr-hpc or torchvision needed to run it); the
                 JSON block is stored as the extra file ``simclr_hpc.json``.

Other architectures (width != 1 or the CIFAR stem) keep the same key names but torchvision cannot build them; the
documented loader is :func:`load_encoder` (``simclr_hpc.models.build_backbone`` with the metadata's settings).

Metadata block: architecture, width, cifar_stem, torchvision_compatible, feat_dim, image_size, normalisation (mean/std
applied to RGB in [0, 1]), stage, config_hash, metrics (top-1 where the stage measures it), run_dir, includes (which
parts are in the file: encoder, head, classifier) and loader (the lines above that load it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from simclr_hpc import fsutil, rundir
from simclr_hpc.config import ConfigError, load_config
from simclr_hpc.data.colour import MEAN, STD
from simclr_hpc.models import Arch, build_backbone
from simclr_hpc.outputs import check_output_file, make_dir
from simclr_hpc.readers import quote
from simclr_hpc.rundir import Result

FORMATS = ("torchvision", "safetensors", "torchscript")
SUFFIX = {"torchvision": ".pt", "safetensors": ".safetensors", "torchscript": ".torchscript.pt"}
METADATA_KEY = "simclr_hpc"


class ExportError(ConfigError):
    """The run cannot be exported as asked (not finished, no exported model, a part it does not have)."""


def _finished_run(run_dir: Path) -> tuple[dict, Arch, Result]:
    """(exported state, arch, result) of a finished run; ExportError naming RUN otherwise."""
    from simclr_hpc.train.artifacts import load_export

    if not run_dir.is_dir():
        raise ExportError(f"RUN {run_dir}: no such run directory (give <root>/<study>/<stage>/<name>)")
    result = Result.read(run_dir)
    if result is None:
        raise ExportError(f"RUN {run_dir}: no {rundir.RESULT}, so the run has not finished; nothing to export yet")
    try:
        export = load_export(run_dir, f"RUN {run_dir}")
    except ConfigError as err:
        raise ExportError(err.lines) from None
    return export.state, export.arch, result


def _parts(state: dict, arch: Arch, head: bool, classifier: bool, run_dir: Path) -> tuple[dict, list[str]]:
    """The tensors to write, with torchvision's names for the encoder, and which parts they are."""
    tensors = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    includes = ["encoder"]
    if head:
        if arch.kind != "simclr":
            raise ExportError(f"--head: {run_dir} is a {arch.kind} run; only pretrain runs have a projection head")
        tensors.update({k: v for k, v in state.items() if k.startswith("head.")})
        includes.append("head")
    if classifier:
        if arch.kind != "classifier":
            raise ExportError(
                f"--classifier: {run_dir} is a pretrain run; export a finetune or distill run's classifier"
            )
        if arch.head_layers:
            raise ExportError(
                f"--classifier: the classifier of {run_dir} sits on projection-head layer "
                f"{arch.head_layers}, not on the encoder; torchvision's fc cannot hold it"
            )
        tensors.update({"fc.weight": state["linear.weight"], "fc.bias": state["linear.bias"]})
        includes.append("classifier")
    return {k: v.detach().contiguous() for k, v in tensors.items()}, includes


def metadata(arch: Arch, result: Result, run_dir: Path, includes: list[str]) -> dict:
    """The JSON block every export carries (see the module docstring)."""
    model = arch.model
    cfg = load_config(rundir.config_path(run_dir))
    compatible = model.width == 1.0 and not model.cifar_stem
    if compatible and "classifier" in includes:
        loader = f"torchvision.models.{model.backbone}(num_classes={arch.num_classes}).load_state_dict(sd)"
    elif compatible:
        loader = f"m = torchvision.models.{model.backbone}(); m.fc = torch.nn.Identity(); m.load_state_dict(sd)"
    else:
        loader = "simclr_hpc.train.export.load_encoder(FILE)"
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    return {
        "architecture": model.backbone,
        "width": model.width,
        "cifar_stem": model.cifar_stem,
        "torchvision_compatible": compatible,
        "feat_dim": build_backbone(model.backbone, model.cifar_stem, model.width).feat_dim,
        "image_size": cfg.data.image_size,
        "normalisation": {"mean": list(MEAN), "std": list(STD)},
        "stage": result.stage,
        "config_hash": result.config_hash,
        "metrics": metrics,
        "run_dir": str(run_dir),
        "includes": includes,
        "loader": loader,
    }


def check_out(path: Path, fmt: str, run_dir: Path, force: bool, default: bool) -> list[Path]:
    """The files an export of ``run_dir`` as ``fmt`` to ``path`` writes, after every check that can fail on what the
    user gave (before anything is loaded or written): the format's suffix (``read_metadata`` and loaders go by it),
    never a file of the run itself (only under its ``export/``), and ``outputs.check_output_file``'s rules (no
    overwrite without ``--force``; never a directory, a link or a device)."""
    suffix = SUFFIX[fmt]
    wrong = fmt != "torchscript" and path.name.endswith(SUFFIX["torchscript"])
    if not path.name.endswith(suffix) or wrong:
        raise ExportError(
            f"--out {path}: a {fmt} export is named *{suffix} (loaders tell the format by it); rename "
            f"it, or choose the --format its name says"
        )
    files = [path, path.with_name(path.name + ".json")] if fmt == "torchvision" else [path]
    inside = run_dir.resolve()
    for file in files:
        where = file.parent.resolve() / file.name
        if where.is_relative_to(inside) and not where.is_relative_to(inside / rundir.EXPORT):
            raise ExportError(
                f"--out {path}: {file} is inside the run directory {run_dir}, whose own files an export "
                f"never replaces; write under {run_dir / rundir.EXPORT} or elsewhere"
            )
        if default and not file.parent.exists():
            continue  # <run>/export/ is created for the default output
        check_output_file(file, "--out", force)
    return files


def export_run(
    run_dir: str | Path,
    fmt: str = "torchvision",
    out: str | Path | None = None,
    head: bool = False,
    classifier: bool = False,
    force: bool = False,
) -> Path:
    """Write the encoder of the finished run ``run_dir`` (and optionally its head or classifier) as ``fmt``; return the
    file. Default ``out``: ``<run_dir>/export/encoder<suffix>``. An existing file is replaced only with ``force``;
    each file is written atomically (a full disk leaves no partial file, one line naming it)."""
    if fmt not in FORMATS:
        shown = fmt if fmt.isprintable() and len(fmt) <= 40 else quote(fmt)
        raise ExportError(f"--format {shown}: use one of {', '.join(FORMATS)}")
    if fmt == "torchscript" and (head or classifier):
        raise ExportError("--format torchscript holds the encoder only; drop --head/--classifier")
    run_dir = Path(run_dir)
    path = Path(out) if out else run_dir / rundir.EXPORT / f"encoder{SUFFIX[fmt]}"
    files = check_out(path, fmt, run_dir, force, default=out is None)
    state, arch, result = _finished_run(run_dir)
    tensors, includes = _parts(state, arch, head, classifier, run_dir)
    meta = metadata(arch, result, run_dir, includes)
    if out is None:
        make_dir(path.parent, "export directory")
    written: list[Path] = []
    try:
        for file in reversed(files):  # the metadata first: a loader never finds weights without it
            with fsutil.atomic_path(file) as tmp:
                _write(fmt if file == path else "json", tmp, tensors, meta)
            written.append(file)
    except fsutil.AtomicWriteError:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    return path


def _write(kind: str, tmp: Path, tensors: dict, meta: dict) -> None:
    """Write one file of an export to the temporary path ``tmp``."""
    if kind == "json":
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    elif kind == "torchvision":
        torch.save(tensors, tmp)
    elif kind == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(meta)})
    else:
        encoder = _build(meta)
        encoder.load_state_dict(tensors)
        scripted = torch.jit.script(encoder.eval())
        torch.jit.save(scripted, str(tmp), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})


def _build(meta: dict) -> nn.Module:
    return build_backbone(meta["architecture"], meta["cifar_stem"], meta["width"])


def read_metadata(path: str | Path) -> dict:
    """The metadata block of an export in any of the three formats."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()[METADATA_KEY])
    if path.name.endswith(SUFFIX["torchscript"]):
        extra = {f"{METADATA_KEY}.json": ""}
        torch.jit.load(str(path), _extra_files=extra)
        return json.loads(extra[f"{METADATA_KEY}.json"])
    return json.loads(path.with_name(path.name + ".json").read_text())


def load_encoder(path: str | Path) -> nn.Module:
    """The loader for any exported encoder (torchvision-compatible or not): ``build_backbone`` with the metadata's
    architecture, width and stem, weights loaded with ``strict=True``. Head or classifier tensors are left out."""
    path = Path(path)
    if path.name.endswith(SUFFIX["torchscript"]):
        raise ExportError(f"{path}: a TorchScript export; load it with torch.jit.load({str(path)!r})")
    meta = read_metadata(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    encoder = _build(meta)
    encoder.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(("head.", "fc."))}, strict=True)
    return encoder
