"""The ``simclr-hpc`` command. Each group of commands lives in its own module and registers itself here.

Commands stay thin: parse options, call one library function, print. No torch import at module top anywhere under
``cli/``: ``--help``, ``config validate`` and ``submit --dry-run`` must be instant on a login node.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from simclr_hpc import __version__
from simclr_hpc.cli import data, doctor, export, jobs, run, study, submit
from simclr_hpc.train.metrics import VERBOSE_ENV, quiet_third_party

app = typer.Typer(
    name="simclr-hpc",
    help="SimCLR pretraining and the fine-tuning, distillation and transfer studies of arXiv 2108.00587 on Slurm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command and group
)


def _version(value: bool) -> None:
    if value:
        print(f"simclr-hpc {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show other libraries' warnings and info lines (DeepSpeed, Accelerate, "
            "torch); jobs started from this command inherit it.",
        ),
    ] = False,
) -> None:
    """SimCLR pretraining and the fine-tuning, distillation and transfer studies of arXiv 2108.00587 on Slurm."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # jobs started from here (local or Slurm, which exports the environment) see it
    quiet_third_party()


for module in (run, data, submit, jobs, study, export, doctor):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
