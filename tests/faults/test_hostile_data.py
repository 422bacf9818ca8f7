"""Hostile and unusual data, beyond the one-line refusals of the table: decompression bombs, 16-bit and float images,
folders mixing grey and colour, hidden folders, shards where nothing decodes under ``data.on_error=skip``, two builds
into one directory, a build stopped by SIGTERM, and ``cancel --study`` meeting a pid that is no longer its job's."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.data.shards import iter_tar_samples, read_index
from tests.faults.helpers import CLI, REPO, cli, cli_inprocess, one_error_line, rewrite_shard


def _folder(root: Path, classes: str = "ab", n: int = 3, grey: bool = False) -> Path:
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (16, 16) if grey else (16, 16, 3)
            Image.fromarray(np.full(shape, 40 * i + 10, np.uint8)).save(root / cls / f"{i}.png")
    return root


def _png_claiming(width: int, height: int) -> bytes:
    """A 69-byte PNG whose header claims ``width`` x ``height`` grey pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")


def _stored(shards: Path, file_name: str) -> np.ndarray:
    """The pixels the shards hold for the source file called ``file_name``."""
    index = read_index(shards)
    for split in index.splits.values():
        names = dict(zip(split.keys, split.names or []))
        for shard in split.shards:
            for key, parts in iter_tar_samples(shards / shard.name):
                if names.get(key) == file_name:
                    return np.asarray(Image.open(io.BytesIO(parts.get("png") or parts["jpg"])))
    raise AssertionError(f"{file_name} not in {shards}")


def test_a_png_claiming_40000_by_40000_is_refused_from_its_header_in_a_second(tmp_path):
    src = _folder(tmp_path / "src")
    (src / "a" / "bomb.png").write_bytes(_png_claiming(40000, 40000))
    start = time.monotonic()
    result = cli_inprocess("data", "shards", f"imagefolder:{src}", str(tmp_path / "out"))
    assert time.monotonic() - start < 20 and result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    assert any("bomb.png" in line and "40000x40000" in line for line in result.stderr.splitlines()), result.stderr


def test_16_bit_pngs_and_float_tiffs_are_scaled_not_saturated_and_other_ranges_refused(tmp_path):
    src = _folder(tmp_path / "src")
    deep = np.arange(256, dtype=np.uint16).reshape(16, 16) * 256 + 128
    Image.fromarray(deep).save(src / "a" / "deep.png")  # mode I;16: was stored all white (clipped at 255)
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(unit).save(src / "b" / "unit.tif")  # mode F in [0, 1]: was stored black
    assert cli_inprocess("data", "shards", f"imagefolder:{src}", str(tmp_path / "out")).exit_code == 0
    assert np.array_equal(_stored(tmp_path / "out", "deep.png"), (deep >> 8).astype(np.uint8))
    assert np.array_equal(_stored(tmp_path / "out", "unit.tif"), np.rint(unit * 255).astype(np.uint8))
    Image.fromarray(np.linspace(-5, 900, 256, dtype=np.float32).reshape(16, 16)).save(src / "b" / "odd.tif")
    result = cli_inprocess("data", "shards", f"imagefolder:{src}", str(tmp_path / "out2"))
    assert result.exit_code == 2 and "odd.tif" in result.stderr and "[-5, 900]" in result.stderr, result.stderr


def test_channels_are_decided_by_all_the_data_not_the_first_image(tmp_path):
    mixed = _folder(tmp_path / "mixed")
    for i in range(3):
        Image.fromarray(np.full((16, 16), 99, np.uint8)).save(mixed / "a" / f"g{i}.png")
    grey = _folder(tmp_path / "grey", grey=True)
    for seed in range(3):  # whichever image the shuffle puts first
        out = tmp_path / f"mixed-{seed}"
        assert cli_inprocess("data", "shards", f"imagefolder:{mixed}", str(out), "--seed", str(seed)).exit_code == 0
        assert read_index(out).channels == 3
        assert _stored(out, "1.png").ndim == 3  # colour kept colour
    assert cli_inprocess("data", "shards", f"imagefolder:{grey}", str(tmp_path / "g")).exit_code == 0
    assert read_index(tmp_path / "g").channels == 1


def test_hidden_folders_are_not_classes(tmp_path):
    src = _folder(tmp_path / "src")
    _folder(src, classes=[".ipynb_checkpoints"])
    assert cli_inprocess("data", "shards", f"imagefolder:{src}", str(tmp_path / "out")).exit_code == 0
    assert read_index(tmp_path / "out").classes == ["a", "b"]


def test_skip_on_shards_where_nothing_decodes_stops_with_a_reason(tmp_path, tiny_shards):
    import shutil

    from tests.conftest import tiny_overrides

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    for tar in shards.glob("*.tar"):
        size = tar.stat().st_size
        rewrite_shard(tar, lambda name, data: b"\x89PNG\r\n\x1a\nnot an image" if name.endswith(".png") else data)
        with open(tar, "r+b") as f:  # the recorded size, so that only the contents differ
            f.truncate(size)
    sets = [
        x for o in tiny_overrides(shards, tmp_path / "runs", steps=2) + ["data.on_error=skip"] for x in ("--set", o)
    ]
    proc = cli("run", "pretrain", *sets, timeout=120)  # a fresh process: its own log handler; a hang fails
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = "\n".join(line for line in proc.stderr.splitlines() if not line[:2].isdigit())  # log lines aside
    one_error_line(errors, "undecodable", "data.on_error=skip cannot train on nothing")


def _cli_proc(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_a_second_build_into_a_directory_being_built_is_refused_and_a_sigterm_build_resumes(tmp_path):
    out = tmp_path / "out"
    first = _cli_proc("data", "shards", "shapes:10:400:32", str(out), "--shard-size", "100")
    deadline = time.monotonic() + 60
    while not list(out.glob("*.tar")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = cli_inprocess("data", "shards", "shapes:4:100:32", str(out))
    assert second.exit_code == 2 and "another run is writing here" in second.stderr, second.output
    first.send_signal(signal.SIGTERM)  # stopped mid-build
    first.wait(timeout=60)
    if first.returncode == 0:
        pytest.skip("the build finished before SIGTERM reached it (a fast machine)")
    again = cli_inprocess("data", "shards", "shapes:10:400:32", str(out), "--shard-size", "100")
    assert again.exit_code == 0, again.output
    whole = cli_inprocess("data", "shards", "shapes:10:400:32", str(tmp_path / "whole"), "--shard-size", "100")
    assert whole.exit_code == 0
    assert read_index(out).content_hash == read_index(tmp_path / "whole").content_hash  # as if never stopped
    assert not list(out.glob(".*partial*")) and not (out / ".lock").exists()


def test_cancel_signals_only_a_pid_that_is_still_the_jobs_own_process(tmp_path):
    from simclr_hpc.launch.registry import JobRecord, Registry, registry_path

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # reused the job's pid
    own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # submitit"])
    try:
        records = [
            JobRecord(
                study="s",
                stage="pretrain",
                run_name=f"r{i}",
                job_id=str(proc.pid),
                executor="local",
                state="RUNNING",
                run_dir=str(tmp_path / "runs" / "s" / "pretrain" / f"r{i}"),
                log_dir="l",
                stdout="o",
                stderr="e",
                config_hash="0" * 16,
            )
            for i, proc in enumerate((stranger, own))
        ]
        Registry(registry_path(tmp_path / "runs", "s")).add(records)
        assert cli_inprocess("cancel", "--study", "s", "--root", str(tmp_path / "runs")).exit_code == 0
        assert own.wait(timeout=20) == -signal.SIGTERM
        time.sleep(0.5)
        assert stranger.poll() is None  # never signalled: it is not the job's process
    finally:
        for proc in (stranger, own):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
