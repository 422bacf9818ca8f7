"""The ``simclr-hpc`` command. Each group of commands lives in its own module and registers itself here.

Commands stay thin: parse options, call one library function, print. No torch import at module top anywhere under
``cli/``: ``--help``, ``config validate`` and ``submit --dry-run`` must be instant on a login node.
"""

from __future__ import annotations

import typer

from simclr_hpc.cli import data, doctor, jobs, run, study, submit

app = typer.Typer(
    name="simclr-hpc",
    help="SimCLR pretraining and the fine-tuning, distillation and transfer studies of arXiv 2108.00587 on Slurm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (run, data, submit, jobs, study, doctor):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
