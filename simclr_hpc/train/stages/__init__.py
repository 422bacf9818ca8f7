"""One task class per stage (see ``train/task.py`` for the protocol they implement, ``train/task_table.py`` for the
table that names them and says what each stage needs)."""

from simclr_hpc.train.stages.distill import DistillTask
from simclr_hpc.train.stages.pretrain import PretrainTask
from simclr_hpc.train.stages.supervised import FinetuneTask, TransferTask

__all__ = ["DistillTask", "FinetuneTask", "PretrainTask", "TransferTask"]
