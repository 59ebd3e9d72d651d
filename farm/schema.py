"""Typed, path-aware conversion of plain YAML data into frozen dataclasses.

Every config section in farm is a dataclass. ``parse`` walks the type hints and collects
*every* problem (unknown key, wrong type, impossible value) with its dotted field path, so
that ``farm validate`` can report all mistakes of a config at once instead of one per run.
Cross-field rules live in an optional ``check(self) -> list[str]`` method on a dataclass;
each returned message is prefixed with the dataclass's path.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from farm.errors import ConfigError


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_describe(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def parse(tp: Any, data: Any, path: str = "") -> tuple[Any, list[str]]:
    """Convert ``data`` to ``tp``; return (value, problems). Value is None when it failed."""
    origin = get_origin(tp)
    if tp is Any:
        return data, []
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if data is None and type(None) in args:
            return None, []
        # Try the members in order; the first that parses without problems wins.
        first_problems: list[str] | None = None
        for arg in args:
            if arg is type(None):
                continue
            value, problems = parse(arg, data, path)
            if not problems:
                return value, []
            if first_problems is None:
                first_problems = problems
        if len([a for a in args if a is not type(None)]) == 1 and first_problems:
            return None, first_problems
        return None, [f"{path or '<root>'}: expected {_describe(tp)}, got {data!r}"]
    if origin is Literal:
        if data in get_args(tp):
            return data, []
        return None, [f"{path or '<root>'}: expected {_describe(tp)}, got {data!r}"]
    if origin in (list, tuple):
        if not isinstance(data, (list, tuple)):
            return None, [f"{path or '<root>'}: expected {_describe(tp)}, got {data!r}"]
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(data) != len(args):
                return None, [f"{path}: expected {len(args)} items, got {len(data)}"]
            parsed = [parse(a, d, _join(path, i)) for i, (a, d) in enumerate(zip(args, data))]
        else:
            item = args[0] if args else Any
            parsed = [parse(item, d, _join(path, i)) for i, d in enumerate(data)]
        problems = [p for _, ps in parsed for p in ps]
        values = [v for v, _ in parsed]
        return (tuple(values) if origin is tuple else values), problems
    if origin is dict:
        if not isinstance(data, dict):
            return None, [f"{path or '<root>'}: expected {_describe(tp)}, got {data!r}"]
        _, vt = get_args(tp)
        out, problems = {}, []
        for k, v in data.items():
            value, ps = parse(vt, v, _join(path, str(k)))
            out[str(k)] = value
            problems += ps
        return out, problems
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, data, path)
    if tp is bool:
        if isinstance(data, bool):
            return data, []
    elif tp is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data, []
    elif tp is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            if not math.isfinite(data):  # YAML's .nan/.inf pass every `x <= 0` style check
                return None, [f"{path or '<root>'}: must be a finite number, got {data!r}"]
            return float(data), []
    elif tp is str:
        if isinstance(data, str):
            return data, []
    elif isinstance(tp, type) and isinstance(data, tp):
        return data, []
    return None, [f"{path or '<root>'}: expected {_describe(tp)}, got {data!r}"]


def _parse_dataclass(cls: Any, data: Any, path: str) -> tuple[Any, list[str]]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [f"{path or '<root>'}: expected {_describe(cls)}, got {data!r}"]
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems: list[str] = []
    for key in data:
        if key not in fields:
            problems.append(
                f"{_join(path, str(key))}: unknown key; expected one of {', '.join(sorted(fields))}"
            )
    kwargs: dict[str, Any] = {}
    failed: set[str] = set()
    for name, f in fields.items():
        if name in data:
            value, ps = parse(hints[name], data[name], _join(path, name))
            problems += ps
            if ps and not _well_typed(value):
                failed.add(name)
            else:
                kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{_join(path, name)}: required field is missing ({_describe(hints[name])})")
            failed.add(name)
    try:
        obj = cls(**kwargs)  # failed fields fall back to their defaults, to run check() anyway
    except (TypeError, ValueError) as exc:
        return None, problems or [f"{path or '<root>'}: {exc}"]
    check = getattr(obj, "check", None)
    if callable(check):
        # check() messages are relative ("field: what is wrong"); anchor them at this path.
        # Messages about fields that already failed to parse would only echo the defaults.
        problems += [_join(path, msg) if path else msg for msg in check()
                     if re.split(r"[.\[: ]", msg, maxsplit=1)[0] not in failed]
    # Returned even with problems (the caller reports them): a parent's cross-field checks
    # then see this object's values, e.g. a pair list with one bad entry still has its
    # out-of-range classes reported in the same run of `farm validate`.
    return obj, problems


def _well_typed(value: Any) -> bool:
    """A value parsed with problems that still has the declared shape (a dataclass whose own
    check failed, or containers of such): safe for the parent's checks to read."""
    if isinstance(value, (list, tuple)):
        return all(_well_typed(v) for v in value)
    if isinstance(value, dict):
        return all(_well_typed(v) for v in value.values())
    return value is not None


def build(cls: type, data: Any, path: str = "", source: str | None = None) -> Any:
    """Parse or raise :class:`ConfigError` listing every problem."""
    value, problems = parse(cls, data, path)
    if problems:
        raise ConfigError(problems, source)
    return value


def to_dict(obj: Any) -> Any:
    """Inverse of ``parse``: plain data suitable for YAML/JSON (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["ConfigError", "parse", "build", "to_dict"]
