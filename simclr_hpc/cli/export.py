"""``simclr-hpc export RUN``: a finished run's encoder as a torchvision state dict, safetensors or TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import user_errors


@user_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run directory of a finished run (<root>/<study>/<stage>/<name>).")],
    format_: Annotated[
        str,
        typer.Option(
            "--format", help="torchvision (state dict + .json), safetensors (metadata inside) or torchscript."
        ),
    ] = "torchvision",
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Output file (none: RUN/export/encoder.<format>).")
    ] = None,
    head: Annotated[bool, typer.Option("--head", help="Add the projection head (pretrain runs) as head.*.")] = False,
    classifier: Annotated[
        bool,
        typer.Option(
            "--classifier", help="Add the linear classifier as torchvision's fc (finetune/distill runs on the encoder)."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (and its .json).")] = False,
) -> None:
    """Export the encoder of a finished run; torchvision.models.resnetNN() loads it strictly at width 1 without the
    CIFAR stem (see simclr_hpc/train/export.py for the loader of the others)."""
    from simclr_hpc.train.export import export_run, read_metadata

    path = export_run(run, format_, out, head=head, classifier=classifier, force=force)
    meta = read_metadata(path)
    print(
        f"{path}: {meta['architecture']} width {meta['width']}{' cifar stem' if meta['cifar_stem'] else ''}, "
        f"{'+'.join(meta['includes'])}; load with: {meta['loader']}"
    )


def register(app: typer.Typer) -> None:
    """Add ``export`` to the app."""
    app.command("export")(export)
