"""``simclr-hpc data shards|inspect|verify``: build, look at and check a shard directory.

Thin: each command calls one function of ``simclr_hpc.data.shards`` (imported inside the command, so ``--help`` does not
pay for torch) and prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc.cli.common import user_errors
from simclr_hpc.config import UserError
from simclr_hpc.data.source_spec import GRAMMAR

data_app = typer.Typer(help="Build, inspect and verify WebDataset shard directories.", no_args_is_help=True)


def _available_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


class _Progress:
    """One line per 5 % of the shards written (a large build is long; a small one prints little)."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = done * 20 // total
        if step != self.shown and total > 1:
            self.shown = step
            typer.echo(f"shards: {done} of {total} written", err=True)


@data_app.command("shards")
@user_errors
def shards(
    source: Annotated[str, typer.Argument(help=f"Dataset source: one of {GRAMMAR}.")],
    out_dir: Annotated[
        Path,
        typer.Argument(
            help="Directory to create, or the directory of an unfinished build of the "
            "same source and settings (only what is missing is written)."
        ),
    ],
    val_fraction: Annotated[float, typer.Option(help="Fraction of train carved out as a stratified val split.")] = 0.0,
    shard_size: Annotated[int, typer.Option(help="Samples per tar file.")] = 1000,
    seed: Annotated[
        int,
        typer.Option(min=0, max=2**32 - 1, help="Seed of the split carving and shuffling (and of generated datasets)."),
    ] = 0,
    image_format: Annotated[str, typer.Option(help="png, jpg, or auto (png up to 128 px, jpg above).")] = "auto",
    workers: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            max=1024,
            help="Processes writing shards (default: the CPUs "
            "available to this process; with --submit: CPUs of each task, "
            "default the profile's CPUs of a node).",
        ),
    ] = None,
    check: Annotated[
        str,
        typer.Option(
            help="header: each image's header parses and the file is not cut short; full: decode every image."
        ),
    ] = "header",
    submit: Annotated[
        bool,
        typer.Option(
            "--submit", help="Build as a Slurm array (one task per shard range), then a job that writes index.json."
        ),
    ] = False,
    tasks: Annotated[
        Optional[int],
        typer.Option(min=1, max=100_000, help="With --submit: array tasks (default: the shards, at most 64)."),
    ] = None,
    profile: Annotated[
        Optional[str], typer.Option(help="With --submit: site profile (configs/clusters/NAME.yaml or a path).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --submit: print the sbatch scripts; write and submit nothing.")
    ] = False,
) -> None:
    """Write SOURCE as train/val/test WebDataset shards plus index.json into OUT_DIR."""
    _reject_unknown_check(check)
    settings = {"val_fraction": val_fraction, "shard_size": shard_size, "seed": seed, "image_format": image_format}
    if submit or dry_run:
        _submit_shards(
            source, out_dir, tasks=tasks, profile=profile, workers=workers, check=check, dry_run=dry_run, **settings
        )
    else:
        _build_locally(source, out_dir, workers=workers, check=check, **settings)


def _reject_unknown_check(check: str) -> None:
    """``--check`` is one of the build's checks (header or full), before anything is planned or written."""
    from simclr_hpc.data.build import CHECKS

    if check not in CHECKS:
        raise UserError(f"--check {check!r}: use header or full")


def _build_locally(source: str, out_dir: Path, *, workers: int | None, check: str, **settings) -> None:
    """Without ``--submit``: write the shards here, in ``workers`` processes (default: the CPUs available), then print
    what index.json says."""
    from simclr_hpc.data.build import write_shards

    index = write_shards(
        source,
        out_dir,
        **settings,
        workers=workers or _available_cpus(),
        check=check,
        progress=_Progress(),
    )
    size = "x".join(map(str, index.image_size)) if index.image_size else "mixed sizes"
    for name, split in index.splits.items():
        typer.echo(f"{name}: {len(split.keys)} samples in {len(split.shards)} shard(s)")
    typer.echo(
        f"{index.num_classes} classes, {size}, {index.channels} channel(s), {index.image_format}; "
        f"evaluation split {index.eval_split}; content hash {index.content_hash[:16]}; "
        f"wrote {index.root / 'index.json'}"
    )


def _submit_shards(
    source: str,
    out_dir: Path,
    *,
    tasks: int | None,
    profile: str | None,
    workers: int | None,
    check: str,
    dry_run: bool,
    **settings,
) -> None:
    """``--submit``: plan here (the source is listed once), then the array and the index job."""
    from simclr_hpc.data.build import plan_build, start_build
    from simclr_hpc.launch import make_request
    from simclr_hpc.launch.shard_array import MAX_TASKS, render_shard_array, submit_shard_array

    request = make_request(profile=profile)
    plan, _ = plan_build(source, out_dir, **settings)
    tasks = min(tasks or MAX_TASKS, len(plan.shards()))
    if dry_run:
        for script in render_shard_array(plan.root, tasks, request, workers):
            typer.echo(script)
        return
    pending = start_build(plan)
    jobs = submit_shard_array(plan.root, tasks, request, check, workers)
    typer.echo(
        f"submitted array job {jobs.array_job_id} ({jobs.tasks} task(s); {len(pending)} of "
        f"{len(plan.shards())} shard(s) to write) and job {jobs.finish_job_id}, which writes "
        f"{plan.root / 'index.json'} once every task succeeded; logs in {jobs.log_dir}"
    )


@data_app.command("inspect")
@user_errors
def inspect_cmd(
    directory: Annotated[Path, typer.Argument(help="Shard directory (with index.json).")],
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="Write the contact sheet here (a .png) instead of into DIRECTORY (e.g. a read-only one)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Print sample counts per split and class and write a contact sheet PNG into DIRECTORY (or --out)."""
    from rich.console import Console
    from rich.table import Table

    from simclr_hpc.data.shards import inspect

    info = inspect(directory, out=out, force=force)
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
