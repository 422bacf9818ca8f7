"""One reader for every file the CLI reads.

Whatever a user points a command at (a config, a site profile, a study file, an ``index.json``, a ``result.json``) is
read by :func:`read_text`, :func:`read_yaml` or :func:`read_json`. Every way such a file can be wrong (missing, a
directory, unreadable, binary instead of UTF-8 text, bad YAML or JSON syntax, an alias that refers to itself, a bomb of
nested aliases, a top level that is not a mapping) becomes one :class:`FileError` line naming the file and the fix,
never a traceback.

(The strict JSON *writer* is ``fsutil.dumps_json``.)

No torch import here; ``config`` (and so everything else) builds on this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# Far above any real config, study or index, far below what a hostile file needs to exhaust memory or time.
MAX_BYTES = 256 * 1024 * 1024
MAX_NODES = 200_000


class UserError(ValueError):
    """Bad user input (config, data, study, cluster request). The CLI prints ``lines`` and exits with code 2.

    ``lines`` holds one message per problem, each naming the field, file, shard or job and how to fix it.
    Every module raises a subclass of this for input a user can correct; anything else is a bug and keeps its traceback.
    """

    def __init__(self, lines: list[str] | str):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


def quote(value: object, limit: int = 60) -> str:
    """``value`` as it may appear in an error line: quoted, every unprintable character escaped (a terminal never
    receives an escape sequence or a NUL from a user's file) and at most ``limit`` characters, with the full length
    said when it is cut. The one way a message quotes back what a user gave."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, bytes):
        text = repr(value[:limit])
    else:
        text = repr(value[:limit] if isinstance(value, str) else value)
        text = text if isinstance(value, str) else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    length = len(value) if isinstance(value, (str, bytes)) else len(text)
    if length > limit:
        unit = "bytes" if isinstance(value, bytes) else "characters"
        return f"{text[:limit + 2]}... ({length} {unit})"
    return text


class FileError(UserError):
    """A file named by the user cannot be read as what it should be."""


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable, huge or binary file is a FileError naming it."""
    path = Path(path)
    if path.is_dir():
        raise FileError(f"{path}: is a directory, not a {what}; give the path of the file")
    if not path.is_file():
        raise FileError(f"{path}: {what} not found" + ("" if not path.exists() else " (not a regular file)"))
    try:
        if path.stat().st_size > MAX_BYTES:
            raise FileError(f"{path}: {path.stat().st_size} bytes is too large for a {what}")
        raw = path.read_bytes()
    except PermissionError:
        raise FileError(f"{path}: {what} is not readable (permission denied); check its permissions") from None
    except OSError as exc:
        raise FileError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: not UTF-8 text (byte {exc.start}): a binary file? give the {what} itself") from None


def check_tree(data: Any, where: str) -> Any:
    """Reject a loaded YAML/JSON value that refers to itself (``&a [*a]``) or expands to more than MAX_NODES nodes
    (nested aliases, the "billion laughs"): either would make validation recurse forever or run out of memory."""
    stack: list[tuple[Any, frozenset]] = [(data, frozenset())]
    nodes = 0
    while stack:
        value, ancestors = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise FileError(f"{where}: expands to more than {MAX_NODES} values (nested YAML aliases?); write it out")
        if isinstance(value, (dict, list)):
            if id(value) in ancestors:
                raise FileError(f"{where}: a YAML alias refers to itself (a cycle); replace the alias by its value")
            inner = ancestors | {id(value)}
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, inner) for child in children)
    return data


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """Read a YAML mapping (empty file = ``{}``); anything else is a FileError naming the file, one line."""
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FileError(f"{path}:{where} not valid YAML ({problem})") from None
    except RecursionError:
        raise FileError(f"{path}: nested too deeply to be a {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FileError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return check_tree(data, str(path))


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse the JSON file ``path``; bad syntax or a too-deep nesting is a FileError naming it."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); rewrite or remove the "
                        f"{what}") from None
    except RecursionError:
        raise FileError(f"{path}: nested too deeply to be a {what}") from None
