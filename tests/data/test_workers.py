"""Loader workers fit the CPUs the task was given: warn and use fewer (a divisor: the same batches), never more."""

import logging

import pytest

from simclr_hpc.data import workers


@pytest.fixture
def cpus(monkeypatch):
    def give(n, machine=64):
        monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(n)))
        monkeypatch.setattr(workers.os, "cpu_count", lambda: machine)

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    workers._warn.cache_clear()
    return give


def test_ten_workers_on_four_cpus_become_two_with_a_warning(cpus, caplog):
    cpus(4)  # Slurm's default of 4 CPUs per GPU against 10 workers: 2.75x oversubscribed before
    with caplog.at_level(logging.WARNING, logger="simclr_hpc"):
        assert workers.fit_workers(10) == 2  # the largest divisor of 10 that leaves a CPU for training
    assert "data.num_workers=10 does not fit the 4 CPU(s)" in caplog.text
    assert workers.fit_workers(3) == 3 and workers.fit_workers(0) == 0


def test_slurm_cpus_per_task_and_unbound_ranks_share_the_machine(cpus, monkeypatch):
    cpus(16, machine=16)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert workers.available_cpus() == 3 and workers.fit_workers(4) == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four ranks on this machine, none bound: 4 CPUs each
    assert workers.fit_workers(6) == 3 and workers.fit_workers(1) == 1
    cpus(1, machine=16)
    assert workers.fit_workers(5) == 0  # one CPU: the training process reads itself
