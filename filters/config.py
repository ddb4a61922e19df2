"""Validated TOML into typed dataclasses: the loader behind recipes and harness configs.

A file may `include` a base file (a path relative to itself, or a bundled name that `find`
resolves); the including file's tables are merged over the base's key by key. Every key is
checked, so a typo fails loudly, naming the key and the closest valid one, instead of silently
falling back to a default.
"""

import dataclasses
import difflib
import json
import tomllib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from probes.errors import CurateError


def find_file(name_or_path: str, folder: Path, what: str) -> Path:
    """A config file: an existing path, or the name of one bundled in `folder` (with the closest
    bundled name suggested when neither)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = folder / f"{name_or_path.removesuffix('.toml')}.toml"
    if bundled.is_file():
        return bundled
    names = sorted(p.stem for p in folder.glob("*.toml"))
    close = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise CurateError(
        f"{what} {name_or_path!r} is neither a file nor a bundled {what}; {hint}"
        f"bundled: {', '.join(names)}"
    )


def sections_of(cls: type) -> dict[str, type]:
    """The fields of a config class that are themselves dataclasses: its TOML tables."""
    return {f.name: f.type for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.type)}


def read_merged(
    path: Path,
    cls: type,
    find: Callable[[str], Path],
    absolutize: Callable[[dict[str, Any], Path], None] = lambda raw, folder: None,
    chain: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """The raw TOML of `path` with its includes merged in, keys checked against `cls`.

    `absolutize(raw, folder)` rewrites file references relative to the file that wrote them,
    before merging.
    """
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise CurateError(f"{path}: include cycle ({cycle})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CurateError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise CurateError(f"{path}: cannot read ({exc.strerror})") from exc
    sections = sections_of(cls)
    check_keys(raw, {"include", *(f.name for f in dataclasses.fields(cls))}, str(path))
    absolutize(raw, path.parent)
    include = raw.pop("include", None)
    if include is None:
        return raw
    if not isinstance(include, str):
        raise CurateError(f"{path}: include must be a string (a file or a bundled name)")
    relative = path.parent / include
    base_path = relative if relative.is_file() else find(include)
    base = read_merged(base_path.resolve(), cls, find, absolutize, (*chain, path))
    merged = {**base, **{k: v for k, v in raw.items() if k not in sections}}
    for section in sections:
        if section in base or section in raw:
            merged[section] = {**base.get(section, {}), **raw.get(section, {})}
    return merged


def check_keys(table: dict[str, Any], valid: set[str], where: str) -> None:
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CurateError(
                f"{where}: unknown key {key!r}{hint} (valid: {', '.join(sorted(valid))})"
            )


def build(cls: type, raw: dict[str, Any], where: str, **fixed: Any) -> Any:
    """An instance of `cls` from merged raw TOML: tables become section dataclasses, the
    remaining top-level keys are typed against `cls`'s own fields; `fixed` fills the rest."""
    sections = sections_of(cls)
    values: dict[str, Any] = dict(fixed)
    for name, section_cls in sections.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise CurateError(f"{where}: [{name}] must be a table")
        check_keys(table, {f.name for f in dataclasses.fields(section_cls)}, f"{where} [{name}]")
        values[name] = section_cls(
            **{k: typed(v, section_cls, k, f"{where}: {name}.{k}") for k, v in table.items()}
        )
    for key, value in raw.items():
        if key not in sections and key not in fixed:
            values[key] = typed(value, cls, key, f"{where}: {key}")
    return cls(**values)


def typed(value: Any, cls: type, key: str, where: str) -> Any:
    """Check a value against the dataclass field's annotation (ints are fine for floats)."""
    annotation = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    try:
        return _coerce(value, annotation)
    except TypeError:
        expected = _describe(annotation)
        raise CurateError(f"{where}: expected {expected}, got {json.dumps(value)}") from None


def _coerce(value: Any, annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(value, arg)
                except TypeError:
                    pass
        raise TypeError
    if origin in (list, tuple) and isinstance(value, list):
        inner = [_coerce(v, args[0]) for v in value]
        return tuple(inner) if origin is tuple else inner
    if origin is dict and isinstance(value, dict):
        return {str(k): _coerce(v, args[1]) for k, v in value.items()}
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation in (str, int, bool) and type(value) is annotation:
        return value
    raise TypeError


def _describe(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a table of {_describe(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def check_values(config: Any, checks: list[tuple[str, bool, str]], where: str) -> None:
    """Raise for the first failed (`section.key`, ok, expected) check, naming the key, what it
    must be and the value it has."""
    for name, ok, expected in checks:
        if not ok:
            section, key = name.split(".")
            value = getattr(getattr(config, section), key)
            raise CurateError(f"{where}: {name} must be {expected}, got {json.dumps(value)}")
