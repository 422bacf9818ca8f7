"""The slurm_cluster fixture fails (never skips) when the cluster cannot be started, saying why."""

from __future__ import annotations

import pytest

from tests import slurm_cluster as plugin


def test_without_root_the_fixture_fails_with_the_reason(monkeypatch):
    monkeypatch.setattr(plugin, "_healthy", lambda: False)
    monkeypatch.setattr(plugin.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match="need root"):
        plugin.start_cluster()


def test_without_slurm_packages_the_fixture_names_the_install_script(monkeypatch):
    monkeypatch.setattr(plugin, "_healthy", lambda: False)
    monkeypatch.setattr(plugin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(plugin.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="install_deps.sh"):
        plugin.start_cluster()
