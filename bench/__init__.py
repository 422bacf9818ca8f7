"""Benchmarks of simclr-hpc against the tools users would otherwise use, run side by side in one process (or one
machine) and reported as ratios: absolute times on a shared machine are noise. ``python -m bench.run_all`` runs them
all and appends a dated section to ``bench/results.md``. Peers (lightly) are benchmark/test dependencies only."""
