"""Stands in for the ``simclr-hpc`` executable in the sbatch template tests: records what each task was given.

Writes ``$STANDIN_OUT/task-<RANK or array index>.json`` with its argv, hostname and the rank/rendezvous environment.
With ``STANDIN_RENDEZVOUS=1`` and a world larger than 1 it also joins a gloo process group on the exported
MASTER_ADDR/MASTER_PORT and all-reduces its rank, proving the exported variables let the tasks meet across nodes.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

KEYS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
)


def main() -> None:
    record = {"argv": sys.argv[1:], "host": socket.gethostname(), "env": {k: os.environ.get(k) for k in KEYS}}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("STANDIN_RENDEZVOUS") == "1" and world > 1:
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method="env://", rank=int(os.environ["RANK"]), world_size=world)
        total = torch.tensor([int(os.environ["RANK"])])
        dist.all_reduce(total)
        record["all_reduce_of_ranks"] = int(total.item())
        dist.destroy_process_group()
    name = os.environ.get("RANK") or os.environ.get("SLURM_ARRAY_TASK_ID")
    Path(os.environ["STANDIN_OUT"], f"task-{name}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
