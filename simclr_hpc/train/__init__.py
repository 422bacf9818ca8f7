"""Training: the one loop, a task per stage, the engine, optimizers, checkpoints. ``runner.run_stage`` is the entry."""
