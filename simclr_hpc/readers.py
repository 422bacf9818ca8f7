"""One reader for every file the CLI reads.

Whatever a user points a command at (a config, a site profile, a study file, an ``index.json``, a ``result.json``) is
read by :func:`read_text`, :func:`read_yaml` or :func:`read_json`. Every way such a file can be wrong (missing, a
directory, unreadable, binary instead of UTF-8 text, bad YAML or JSON syntax, an alias that refers to itself, a bomb of
nested aliases, a top level that is not a mapping, a key given twice, an integer of thousands of digits) becomes one
:class:`FileError` line naming the file and the fix, never a traceback.

YAML is read as YAML 1.2 (its core schema, :class:`StrictLoader`), not PyYAML's YAML 1.1: ``010`` is 10 (not 8),
``1:30`` is the text "1:30" (not 90), ``yes``/``no``/``on``/``off`` are text (only ``true``/``false`` are booleans),
``2024-01-01`` is text (not a date), ``1e-6`` is a number. A key given twice in one mapping is an error (PyYAML keeps
the last silently: a second ``train:`` section dropped the first one's ``steps``). ``--set`` values are read the same
way (:func:`yaml_value`).

(The strict JSON *writer* is ``fsutil.dumps_json``.)

No torch import here; ``config`` (and so everything else) builds on this module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

# Far above any real config, study or index, far below what a hostile file needs to exhaust memory or time.
MAX_BYTES = 256 * 1024 * 1024
MAX_NODES = 200_000
MAX_INT_DIGITS = 30
"""Longer integers are refused by the readers: no setting takes one (the largest, a seed or a byte count, has 20
digits), and Python refuses to even convert one of more than 4,300 digits."""


class UserError(ValueError):
    """Bad user input (config, data, study, cluster request). The CLI prints ``lines`` and exits with code 2.

    ``lines`` holds one message per problem, each naming the field, file, shard or job and how to fix it.
    Every module raises a subclass of this for input a user can correct; anything else is a bug and keeps its traceback.
    """

    def __init__(self, lines: list[str] | str):
        # Each problem stays one line whatever a user's value held (a key with a newline, an escape sequence).
        self.lines = [printable(_worker_message(line)) for line in ([lines] if isinstance(lines, str) else lines)]
        super().__init__("\n".join(self.lines))


def _worker_message(text: object) -> object:
    """The error's own message when torch's DataLoader re-raised it from a worker (it prefixes the worker's whole
    traceback): a user sees the one line that says what is wrong, not the worker's stack."""
    if isinstance(text, str) and "\nOriginal Traceback (most recent call last):" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def printable(text: object) -> str:
    """``text`` with every unprintable character (newline, NUL, escape, ...) written as its escape sequence."""
    text = str(text)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


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
        return f"{text[: limit + 2]}... ({length} {unit})"
    return text


class FileError(UserError):
    """A file named by the user cannot be read as what it should be."""


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable, huge or binary file is a FileError naming it."""
    path = Path(path)
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), path.exists()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise FileError(
            f"{quote(str(path))}: not a usable path ({getattr(err, 'strerror', None) or err}); give the "
            f"path of the {what}"
        ) from None
    if is_dir:
        raise FileError(f"{path}: is a directory, not a {what}; give the path of the file")
    if not is_file:
        raise FileError(f"{path}: {what} not found" + ("" if not exists else " (not a regular file)"))
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


class Refused(yaml.YAMLError):
    """Valid YAML syntax that this reader refuses (a key given twice, a huge integer): ``text`` says what and why."""

    def __init__(self, text: str, mark):
        super().__init__(text)
        self.text, self.line = text, mark.line + 1


_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
    r"|\.(?:nan|NaN|NAN))$"
)


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema (see the module docstring), duplicate keys as errors and
    integers of more than MAX_INT_DIGITS digits refused."""

    yaml_implicit_resolvers: dict = {}

    def construct_yaml_int(self, node) -> int:
        text = str(self.construct_scalar(node))
        sign, digits = (-1 if text.startswith("-") else 1), text.lstrip("+-")
        if len(digits) > MAX_INT_DIGITS:
            raise Refused(f"an integer of {len(digits)} digits; no setting takes a number that large", node.start_mark)
        try:
            base = {"0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
            return sign * int(digits[2:] if base != 10 else digits, base)
        except ValueError:
            raise Refused(f"{quote(text)} is not an integer", node.start_mark) from None

    def construct_yaml_float(self, node) -> float:
        text = str(self.construct_scalar(node)).lower()
        special = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
        try:
            return float(special.get(text, text))
        except ValueError:
            raise Refused(f"{quote(text)} is not a number", node.start_mark) from None

    def construct_mapping(self, node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # ``<<: *defaults`` then overriding a key of it is what merge keys are for
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base constructor names it
                if first is not None:
                    raise Refused(
                        f"key {quote(key)} is given twice in one mapping (first on line {first}); YAML "
                        "would keep only the last: merge them into one",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", _INT.pattern, "-+0123456789"),
    ("float", _FLOAT.pattern, "-+0123456789."),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    StrictLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


def _yaml_problem(exc: Exception) -> str:
    """``line N: what`` of a YAML error (PyYAML's own text, or what :class:`StrictLoader` refused)."""
    if isinstance(exc, Refused):
        return f"line {exc.line}: {exc.text}"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1} " if mark else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{where}not valid YAML ({problem})"


def load_yaml(text: str):
    """``text`` parsed by :class:`StrictLoader` (raises yaml.YAMLError, :class:`Refused` among them)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except (ValueError, TypeError, OverflowError) as exc:  # an explicit tag whose text does not fit it (!!timestamp x)
        raise yaml.YAMLError(f"{type(exc).__name__}: {exc}") from None


def yaml_value(raw: str, where: str):
    """One ``--set`` value: a YAML 1.2 scalar or flow collection, checked like a file's (cycles, bombs, huge numbers);
    text that is not valid YAML is taken as the string it is."""
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except Refused as exc:
        raise FileError(f"{where}: {exc.text}") from None
    except yaml.YAMLError:
        return raw
    except RecursionError:
        raise FileError(f"{where}: nested too deeply") from None
    return check_tree(value, where)


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """Read a YAML mapping (empty file = ``{}``); anything else is a FileError naming the file, one line."""
    text = read_text(path, what)
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise FileError(f"{path}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise FileError(f"{path}: nested too deeply to be a {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FileError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return check_tree(data, str(path))


class _HugeInt(ValueError):
    pass


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _HugeInt(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse the JSON file ``path``; bad syntax or a too-deep nesting is a FileError naming it."""
    text = read_text(path, what)
    try:
        return json.loads(text, parse_int=_json_int)
    except _HugeInt as exc:
        raise FileError(f"{path}: {exc}; no field of a {what} takes a number that large") from None
    except json.JSONDecodeError as exc:
        raise FileError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); rewrite or remove the {what}"
        ) from None
    except RecursionError:
        raise FileError(f"{path}: nested too deeply to be a {what}") from None
