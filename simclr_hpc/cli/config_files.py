"""What ``config show`` and ``config validate`` do with files: tell the three kinds of YAML apart, validate each with its
own schema, and print a resolved run config with every field's documentation.

The kinds: a run config (``configs/<stage>/*.yaml``, sections of ``config.Config``), a site profile
(``configs/clusters/*.yaml``, ``launch.profile.Profile``) and a study (``configs/studies/*.yaml``, ``study.schema.Study``).
A file's kind is told by its top-level keys; ``--kind`` overrides that.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from simclr_hpc.config import Config, ConfigError, UserError, load_config, read_yaml

KINDS = ("run", "profile", "study")


def _fields(kind: str) -> set[str]:
    if kind == "run":
        return set(Config.model_fields)
    if kind == "profile":
        from simclr_hpc.launch.profile import Profile

        return set(Profile.model_fields)
    from simclr_hpc.study.schema import Study

    return set(Study.model_fields)


def detect_kind(data: dict) -> str:
    """The kind whose schema knows the most of ``data``'s top-level keys (and fewest unknown); a tie is a run config,
    the kind users write most (``finetune:`` alone is both a run config section and a study section)."""
    keys = set(data)

    def score(kind: str) -> tuple[int, int]:
        known = len(keys & _fields(kind))
        return known - len(keys - _fields(kind)), known

    return max(KINDS, key=lambda kind: (score(kind), kind == "run"))


def validate_file(path: Path, kind: str = "auto") -> str:
    """Validate one file as ``kind`` (or the kind its content says); return that kind. Raises UserError (one line per
    problem, each naming the file and the field)."""
    if kind not in ("auto", *KINDS):
        raise ConfigError(f"--kind {kind}: use auto, {', '.join(KINDS)}")
    if kind == "auto":
        kind = detect_kind(read_yaml(path))
    if kind == "run":
        load_config(path)
    elif kind == "profile":
        from simclr_hpc.launch.profile import load_profile

        load_profile(str(path) if str(path).endswith((".yaml", ".yml")) or "/" in str(path) else f"./{path}")
    else:
        from simclr_hpc.study.plan import load_plan

        load_plan(path)  # the schema, its references and every run config the study expands to
    return kind


def validate_files(files: list[Path], kind: str = "auto") -> dict[str, int]:
    """Validate every file; ``{kind: count}`` when all are valid, else a UserError holding every file's problems."""
    counts: dict[str, int] = {}
    errors: list[str] = []
    for path in files:
        try:
            found = validate_file(path, kind)
        except UserError as err:
            errors.extend(line if str(path) in line else f"{path}: {line}" for line in err.lines)
            continue
        counts[found] = counts.get(found, 0) + 1
    if errors:
        raise ConfigError(errors)
    return counts


def shipped_files(root: Path = Path("configs")) -> list[Path]:
    """Every YAML file under ``configs/`` (run configs, site profiles, studies); a ConfigError when there is none."""
    files = sorted(p for pattern in ("*.yaml", "*.yml") for p in root.rglob(pattern))
    if not files:
        raise ConfigError(f"{root}: no YAML files here; run from the checkout's top directory or name the files")
    return files


def commented_yaml(cfg: Config, width: int = 100) -> str:
    """``cfg`` as YAML with each field's docstring above it as comments: still valid YAML, readable as a reference."""
    docs = {}
    for section_name, section in type(cfg).model_fields.items():
        for name, info in section.annotation.model_fields.items():
            docs[(section_name, name)] = " ".join((info.description or "").split())
    out = []
    for section_name, values in cfg.model_dump(mode="json").items():
        out.append(f"{section_name}:")
        for name, value in values.items():
            for line in textwrap.wrap(docs[(section_name, name)], width - 4, break_on_hyphens=False):
                out.append(f"  # {line}")
            out.append("  " + yaml.safe_dump({name: value}, default_flow_style=True, width=10**6).strip()[1:-1])
    return "\n".join(out) + "\n"
