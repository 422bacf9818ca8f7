"""``simclr-hpc data shards|inspect|verify``: build, look at and check a shard directory.

Thin: each command calls one function of ``simclr_hpc.data.shards`` (imported inside the command, so ``--help`` does not
pay for torch) and prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simclr_hpc.cli.common import user_errors
from simclr_hpc.data.source_spec import GRAMMAR

data_app = typer.Typer(help="Build, inspect and verify WebDataset shard directories.", no_args_is_help=True)


@data_app.command("shards")
@user_errors
def shards(
    source: Annotated[str, typer.Argument(help=f"Dataset source: one of {GRAMMAR}.")],
    out_dir: Annotated[Path, typer.Argument(help="Directory to create (must not already hold shards).")],
    val_fraction: Annotated[float, typer.Option(help="Fraction of train carved out as a stratified val split.")] = 0.0,
    shard_size: Annotated[int, typer.Option(help="Samples per tar file.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the split carving and shuffling (and of generated datasets).")] = 0,
    image_format: Annotated[str, typer.Option(help="png, jpg, or auto (png up to 128 px, jpg above).")] = "auto",
) -> None:
    """Write SOURCE as train/val/test WebDataset shards plus index.json into OUT_DIR."""
    from simclr_hpc.data.shards import write_shards

    index = write_shards(source, out_dir, val_fraction=val_fraction, shard_size=shard_size, seed=seed,
                         image_format=image_format)
    size = "x".join(map(str, index.image_size)) if index.image_size else "mixed sizes"
    for name, split in index.splits.items():
        typer.echo(f"{name}: {len(split.keys)} samples in {len(split.shards)} shard(s)")
    typer.echo(f"{index.num_classes} classes, {size}, {index.channels} channel(s), {index.image_format}; "
               f"content hash {index.content_hash[:16]}; wrote {index.root / 'index.json'}")


@data_app.command("inspect")
@user_errors
def inspect_cmd(directory: Annotated[Path, typer.Argument(help="Shard directory (with index.json).")]) -> None:
    """Print sample counts per split and class and write a contact sheet PNG into DIRECTORY."""
    from rich.console import Console
    from rich.table import Table

    from simclr_hpc.data.shards import inspect

    info = inspect(directory)
    splits = list(info["counts"])
    table = Table(title=f"{directory} ({len(info['classes'])} classes)")
    table.add_column("class")
    for name in splits:
        table.add_column(name, justify="right")
    for k, cls in enumerate(info["classes"]):
        table.add_row(f"{k}: {cls}", *(str(info["counts"][s][cls]) for s in splits))
    table.add_row("total", *(str(sum(info["counts"][s].values())) for s in splits), style="bold")
    Console(width=120).print(table)
    typer.echo(f"contact sheet: {info['contact_sheet']}")


@data_app.command("verify")
@user_errors
def verify_cmd(directory: Annotated[Path, typer.Argument(help="Shard directory (with index.json).")]) -> None:
    """Check every shard, image and label against index.json; print each problem; exit 1 if there is any."""
    from simclr_hpc.data.shards import read_index, verify

    problems = verify(directory)
    for line in problems:
        typer.echo(line)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        raise typer.Exit(1)
    index = read_index(directory)
    total = sum(len(s.keys) for s in index.splits.values())
    shards = sum(len(s.shards) for s in index.splits.values())
    typer.echo(f"ok: {total} samples in {shards} shard(s), every image decodes and every label matches index.json")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the app."""
    app.add_typer(data_app, name="data")
