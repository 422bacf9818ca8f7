"""simclr-hpc: SimCLR pretraining and its fine-tuning, distillation and transfer studies as Slurm batch jobs."""

__version__ = "0.1.0"
