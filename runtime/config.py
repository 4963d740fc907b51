"""Typed configs: dataclass schemas filled from YAML files and ``key=value`` overrides.

A config is a (nested) dataclass. :func:`load_config` reads a YAML file, applies dotted CLI
overrides such as ``env.game=Breakout`` or ``total_steps=5000``, and validates every value against
the schema's type hints. Unknown keys and wrong types raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not match its schema."""


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` instance from an optional YAML file plus ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    return from_dict(schema, apply_overrides(data, overrides))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted ``key=value`` overrides (values parsed as YAML) in a nested mapping, in place."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not of the form key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return data


def from_dict(schema: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Validate a plain mapping against a dataclass schema (recursively)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = get_type_hints(schema)
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"config schema {_type_name(schema)} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key {prefix + key!r}{hint}")
    values = {}
    for name in fields:
        if name in data:
            values[name] = _coerce(hints[name], data[name], prefix + name)
        elif dataclasses.is_dataclass(hints[name]):
            values[name] = from_dict(hints[name], {}, prefix + name + ".")
    try:
        return schema(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config {prefix.rstrip('.') or schema.__name__}: {exc}") from exc


def require(ok: bool, key: str, requirement: str, value: Any) -> None:
    """Raise ``ValueError("<key> must be <requirement>, got <value>")`` unless ``ok``.

    Schemas state their bounds this way in ``__post_init__``; :func:`from_dict` reports the error as a
    :class:`ConfigError`, so a bad value stops a run at start-up with its key named.
    """
    if not ok:
        raise ValueError(f"{key} must be {requirement}, got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists (for YAML, checkpoints and TensorBoard)."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(to_yaml(config))


def describe_config(schema: type) -> str:
    """Every key of ``schema`` (dotted for nested sections) with its type and default, one per line.

    This is what ``--help`` of a training script shows, so that a user sees every overridable key
    without opening the dataclasses.
    """
    rows = list(_describe_fields(schema, schema(), ""))
    width = max(len(key) for key, _, _ in rows)
    type_width = max(len(kind) for _, kind, _ in rows)
    return "\n".join(f"  {key:<{width}}  {kind:<{type_width}}  {default}" for key, kind, default in rows)


def _describe_fields(schema: type, instance: Any, prefix: str) -> typing.Iterator[tuple[str, str, str]]:
    hints = get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if not field.init:
            continue
        tp, value = hints[field.name], getattr(instance, field.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _describe_fields(tp, value, prefix + field.name + ".")
        else:
            yield prefix + field.name, _type_label(tp), _yaml_scalar(value)


def _yaml_scalar(value: Any) -> str:
    """``value`` as it would be written in a config file (``true``, ``null``, ``[1, 2]``, ``auto``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _type_label(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_label(a) for a in get_args(tp))
    if origin is Literal:
        return "{" + ",".join(str(a) for a in get_args(tp)) + "}"
    if tp is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_label(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return _type_name(tp)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key + ".")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key {key!r}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple, Sequence, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        args = get_args(tp)
        item_type = args[0] if args else Any
        items = [_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
        return value
    if tp is int:
        number = _numeric_string(value)
        if number is not None and number.is_integer():
            return int(number)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        number = _numeric_string(value)
        if number is not None:
            return number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key {key!r}: unsupported schema type {_type_name(tp)}")


def _numeric_string(value: Any) -> float | None:
    """The finite number a string spells, else None.

    YAML 1.1 reads exponent forms without a dot (``1e-4``, ``1e6``) as strings, in files and
    in ``key=value`` overrides alike; a numeric field takes them as the numbers they spell.
    """
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
