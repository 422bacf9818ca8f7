"""One task class per stage (see ``train/task.py`` for the protocol they implement)."""

from simclr_hpc.train.stages.distill import DistillTask
from simclr_hpc.train.stages.pretrain import PretrainTask
from simclr_hpc.train.stages.supervised import FinetuneTask, TransferTask

TASKS = {"pretrain": PretrainTask, "finetune": FinetuneTask, "transfer": TransferTask, "distill": DistillTask}
"""Stage name -> task class (constructed with a StageContext)."""

__all__ = ["TASKS", "DistillTask", "FinetuneTask", "PretrainTask", "TransferTask"]
