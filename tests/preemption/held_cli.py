"""``simclr-hpc`` with tests/preemption/paced_runner.py's hold: the SIMCLR_CMD of slurm/pretrain.sbatch in the
time-limit test, so the template's ``simclr-hpc run`` is still training when Slurm's signal comes."""

from __future__ import annotations

from simclr_hpc.cli.main import main
from simclr_hpc.train import runner
from tests.preemption.paced_runner import run_stage

if __name__ == "__main__":
    runner.run_stage = run_stage  # `run` imports it from the module when it runs
    main()
