"""The engines a config can name (``dist.engine``): ``create_engine`` builds the one it names, imported only when asked
for, so a DDP run never imports DeepSpeed, and the interface module (``train/engine.py``) imports neither. Named like
``launch/submit.py``'s ``EXECUTORS``: a name -> implementation table beside the interface it fills."""

from __future__ import annotations

from simclr_hpc import distributed as D
from simclr_hpc.config import Config
from simclr_hpc.train.engine import Engine


def create_engine(cfg: Config, env: D.DistEnv | None = None) -> Engine:
    """The engine ``cfg.dist.engine`` names, joined to the job's process group (``env``: from the environment)."""
    if cfg.dist.engine == "deepspeed":
        from simclr_hpc.train.engine_deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(cfg, env)
    from simclr_hpc.train.engine_ddp import DDPEngine

    return DDPEngine(cfg, env)
