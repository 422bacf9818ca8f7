"""Site profiles: what a cluster needs in every sbatch script, kept in ``configs/clusters/<site>.yaml``.

A profile holds the site's defaults (partition, account, GPUs per node, CPUs and memory per GPU, time limit, container
image and binds, setup lines, NCCL environment); command-line options of ``simclr-hpc submit`` override them.
Every field except ``setup`` is data, validated to a charset that cannot break out of an ``#SBATCH`` line or a shell
word; ``setup`` lines are shell commands on purpose (``module load cuda/12.4``), written by whoever maintains the site
file, exactly like the body of a hand-written sbatch script. No torch import here.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simclr_hpc.config import SAFE_NAME, ConfigError, check_safe_name, format_errors, read_yaml
from simclr_hpc.launch.errors import LaunchError

# Slurm constraint expressions: features joined by & | , with optional [ ] * counts, e.g. "a100&ib" or "[rack1*2|rack2*2]".
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.:&|,\[\]*!-]{1,200}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)
# A year: longer limits are typos (99999-00:00:00) that Slurm would queue forever as "PartitionTimeLimit".
MAX_TIME_MIN = 365 * 24 * 60
_MAIL_TYPES = {
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
}


def check_plain_text(value: str, what: str, max_len: int = 4096) -> str:
    """Reject control characters (newline, carriage return, NUL, ...) and ``%`` in a value that ends up in an sbatch
    script: a newline would start a new script line, ``%`` is a Slurm filename pattern."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{what} {value!r} contains a control character (newline, tab, ...): not allowed")
    if "%" in value:
        raise ValueError(f"{what} {value!r} contains '%', which Slurm reads as a filename pattern: not allowed")
    if len(value) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters")
    return value


def parse_time_min(value: str | int, what: str = "time") -> int:
    """Slurm time limit (``90``, ``1:30:00``, ``1-00:00:00``, ...) as whole minutes, rounded up."""
    if isinstance(value, int):
        minutes = value
    else:
        match = _TIME.match(str(value).strip())
        if not match:
            raise ValueError(f"{what} {value!r}: use minutes, H:M:S or D-H:M:S (for example 1-00:00:00)")
        g = {k: int(v) if v is not None else 0 for k, v in match.groupdict().items()}
        if match.group("d") is not None:
            seconds = ((g["d"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
        elif match.group("c") is not None:
            seconds = (g["a"] * 60 + g["b"]) * 60 + g["c"]
        else:
            seconds = g["a"] * 60 + g["b"]
        minutes = math.ceil(seconds / 60)
    if minutes < 1:
        raise ValueError(f"{what} {value!r}: must be at least 1 minute")
    if minutes > MAX_TIME_MIN:
        raise ValueError(
            f"{what} {value!r}: more than {MAX_TIME_MIN // (24 * 60)} days; no site accepts that, and "
            "runs resume from checkpoints anyway: ask for the partition's limit"
        )
    return minutes


class Profile(BaseModel):
    """One site's defaults for every job submitted there."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = "default"
    """Profile name (the file name without ``.yaml``)."""
    description: str = ""
    """One line for humans: which machine, which partition."""
    partition: str | None = None
    """Slurm partition (``--partition``); empty = the cluster's default partition."""
    account: str | None = None
    """Slurm account to charge (``--account``)."""
    qos: str | None = None
    """Quality of service (``--qos``)."""
    constraint: str | None = None
    """Node feature constraint (``--constraint``), e.g. ``a100&ib``."""
    gpus_per_node: int = Field(1, ge=0, le=16)
    """GPUs per node; one task (rank) per GPU. 0 = CPU-only nodes, one task per node."""
    cpus_per_gpu: int = Field(4, ge=1, le=256)
    """CPU cores per task (= per GPU): data-loading workers plus one. Typical: cores per node / GPUs per node."""
    mem_per_gpu_gb: float | None = Field(None, gt=0, le=4096)
    """Host memory per GPU in GB (``--mem`` = this times GPUs per node); empty = the partition's default."""
    time: str = "1-00:00:00"
    """Time limit of each job, Slurm format (minutes, H:M:S, D-H:M:S)."""
    signal_delay_s: int = Field(120, ge=10, le=3600)
    """Seconds before the time limit at which Slurm sends USR2 (``--signal=USR2@N``, up to 60 s earlier): every rank
    finishes its step, one checkpoint of it is written and the batch script requeues the job. Cover one step, one
    checkpoint write and the exit."""
    max_requeues: int = Field(3, ge=0, le=100)
    """How many time-limit requeues a job may do (preemptions do not count)."""
    image: str | None = None
    """Default image: an Apptainer ``.sif`` path, or a podman image name; ``--container`` overrides it. Empty = none."""
    container_launcher: Literal["apptainer", "podman"] = "apptainer"
    """Container runtime that wraps each task: ``apptainer exec`` (HPC sites), or ``podman run`` (an OCI runtime)."""
    container_args: list[str] = []
    """Extra words for the runtime after ``exec``/``run`` (``--cleanenv``; ``--security-opt=...``), one per entry."""
    binds: list[str] = []
    """Bind specs ``SRC[:DST[:OPTS]]`` (absolute paths), e.g. ``/scratch:/scratch``: ``--bind`` or ``--volume``."""
    container_python: str = "python"
    """Python command inside the image."""
    setup: list[str] = []
    """Shell lines run in the sbatch script before ``srun`` (``module load ...``). Shell on purpose: site maintainer's."""
    env: dict[str, str] = {}
    """Environment of every task (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, OMP_NUM_THREADS, ...)."""
    max_array_size: int = Field(1000, ge=1, le=1_000_000)
    """Largest Slurm array the site accepts (MaxArraySize - 1); larger sweeps are split into several arrays."""
    array_parallelism: int = Field(16, ge=1, le=100_000)
    """Default cap on array tasks running at once (``--array=0-N%cap``)."""
    mail_type: str | None = None
    """``--mail-type`` (e.g. ``END,FAIL``); empty = no mail."""
    mail_user: str | None = None
    """``--mail-user`` address."""

    @field_validator("name", "partition", "account", "qos")
    @classmethod
    def _safe(cls, value: str | None, info) -> str | None:
        return None if value in (None, "") else check_safe_name(value, info.field_name)

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not _CONSTRAINT.match(value):
            raise ValueError(f"{value!r}: use feature names joined by & | , (letters, digits, . _ - : [ ] * !)")
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time_min(value)
        return value

    @field_validator("image", "container_python", "description")
    @classmethod
    def _plain(cls, value: str | None, info) -> str | None:
        return None if value is None else check_plain_text(value, info.field_name)

    @field_validator("container_args")
    @classmethod
    def _container_args(cls, value: list[str]) -> list[str]:
        for word in value:
            check_plain_text(word, "container_args entry")
        return value

    @field_validator("binds")
    @classmethod
    def _binds(cls, value: list[str]) -> list[str]:
        for spec in value:
            check_plain_text(spec, "bind")
            src = spec.split(":", 1)[0]
            if "," in spec or not src.startswith("/"):
                raise ValueError(f"bind {spec!r}: use one absolute SRC[:DST[:OPTS]] per entry, no commas")
        return value

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: list[str]) -> list[str]:
        for line in value:
            if "\n" in line or "\r" in line or "\0" in line:
                raise ValueError(f"setup line {line!r}: one command per list entry (no newlines)")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, val in value.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"env name {key!r}: letters, digits and '_' only, not starting with a digit")
            val = str(val)
            if any(ord(ch) < 32 for ch in val):
                raise ValueError(f"env {key}: value contains a control character (newline, ...)")
            out[key] = val
        return out

    @field_validator("mail_type")
    @classmethod
    def _mail_type(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        bad = [t for t in value.split(",") if t not in _MAIL_TYPES]
        if bad:
            raise ValueError(f"unknown mail type(s) {', '.join(bad)}; allowed: {', '.join(sorted(_MAIL_TYPES))}")
        return value

    @field_validator("mail_user")
    @classmethod
    def _mail_user(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+$", value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @property
    def time_min(self) -> int:
        """The time limit in minutes."""
        return parse_time_min(self.time)


def profile_dirs() -> list[Path]:
    """Where ``--profile NAME`` is looked up, first match wins: ``$SIMCLR_HPC_PROFILES`` (``:``-separated),
    ``./configs/clusters``, and the ``configs/clusters`` of this source tree."""
    dirs = [Path(p) for p in os.environ.get("SIMCLR_HPC_PROFILES", "").split(":") if p]
    dirs.append(Path.cwd() / "configs" / "clusters")
    dirs.append(Path(__file__).resolve().parents[2] / "configs" / "clusters")
    return dirs


def list_profiles() -> list[str]:
    """Names of every profile that ``load_profile`` can find."""
    names = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_profile(name_or_path: str | None) -> Profile:
    """The site profile ``name_or_path``: a name in ``profile_dirs()``, or a path to a YAML file.

    ``None`` or ``""`` gives the built-in defaults (cluster default partition, 1 GPU per node). A missing file, a bad
    key or a bad value is a LaunchError naming the file and the field.
    """
    if not name_or_path:
        return Profile()
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise LaunchError(f"--profile {name_or_path}: file not found")
    else:
        try:
            check_safe_name(name_or_path, "--profile")
        except ValueError as err:
            raise LaunchError(str(err)) from None
        found = [d / f"{name_or_path}.yaml" for d in profile_dirs() if (d / f"{name_or_path}.yaml").is_file()]
        if not found:
            known = ", ".join(list_profiles()) or "none"
            raise LaunchError(f"--profile {name_or_path}: no {name_or_path}.yaml in configs/clusters (known: {known})")
        path = found[0]
    try:
        data = read_yaml(path)
    except ConfigError as err:
        raise LaunchError(err.lines) from None
    data.setdefault("name", path.stem if SAFE_NAME.match(path.stem) else "custom")
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise LaunchError(format_errors(err, f"{path}: ")) from None
