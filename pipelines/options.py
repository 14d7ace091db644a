"""One options layer: a stage's config dataclass is its command line and its YAML section.

A config field is declared with :func:`option`; its metadata says everything the edges need:

- ``help``: the ``--help`` text (and the spec's documentation);
- ``positional``: a positional argument on the command line (``DATA``);
- ``path``: a local path or URI; a spec resolves it against the spec's folder;
- ``execution``: changes how a run executes, not what it computes (workers, retries,
  logging): left out of what identifies a run's result;
- ``resume``: taken from the new invocation when an interrupted run is continued (all other
  options come from the run's record);
- ``cli=False``: not an option at all (a test hook).

:func:`add_arguments` and :func:`from_args` build and read an ``argparse`` parser;
:func:`from_mapping` checks a YAML mapping against the same fields. Errors are
:class:`OptionError` carrying the field, never text for a caller to parse.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from pipelines.errors import OptionError, UserError

_MISSING = dataclasses.MISSING


def option(
    help: str,  # noqa: A002 - the name argparse and the field metadata use
    *,
    default: Any = _MISSING,
    default_factory: Any = _MISSING,
    positional: bool = False,
    path: bool = False,
    execution: bool = False,
    resume: bool = False,
) -> Any:
    """A config field with its option metadata (see the module docstring)."""
    metadata = {
        "help": help,
        "positional": positional,
        "path": path,
        "execution": execution,
        "resume": resume,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def hidden(default: Any = None) -> Any:
    """A config field that is no option (a hook a test or a caller sets in code)."""
    return dataclasses.field(default=default, metadata={"cli": False, "execution": True})


def fields(cls: type) -> dict[str, dataclasses.Field]:
    """The option fields of the config ``cls`` (those a user sets), by name."""
    return {
        f.name: f
        for f in dataclasses.fields(cls)
        if f.init and f.metadata.get("cli") is not False
    }


def names(cls: type, flag: str) -> tuple[str, ...]:
    """The fields of ``cls`` whose metadata sets ``flag`` (``path``, ``execution``...)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(flag))


def values(config: Any) -> dict[str, Any]:
    """The config's option values (hooks left out): its params and its record."""
    return {name: getattr(config, name) for name in fields(type(config))}


def flag(name: str) -> str:
    """The command-line flag of the field ``name``."""
    return "--" + name.replace("_", "-")


def require_local_folder(name: str, value: str, who: str) -> None:
    """:class:`OptionError` unless the field ``name``'s ``value`` is a local folder (set, and
    not a URI): for what ``who`` writes with plain file I/O (a video encoder, a demo)."""
    if not value:
        raise OptionError(name, f"{flag(name)} is empty")
    if "://" in value:
        raise OptionError(name, f"{flag(name)} {value}: {who} writes to a local folder only")


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _default(f: dataclasses.Field) -> tuple[bool, Any]:
    if f.default is not _MISSING:
        return True, f.default
    if f.default_factory is not _MISSING:
        return True, f.default_factory()
    return False, None


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of the config ``cls`` (positional where marked)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls).values():
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        has_default, default = _default(f)
        kwargs: dict[str, Any] = {"help": help_text}
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["type"] = type(typing.get_args(tp)[0])
        elif origin in (tuple, list):
            args = typing.get_args(tp)
            kwargs["type"] = args[0]
            kwargs["nargs"] = len(args) if origin is tuple and ... not in args else "+"
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
        if f.metadata.get("positional"):
            kwargs.pop("action", None)
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
            continue
        if has_default:
            kwargs["default"] = default
            if tp is not bool and default is not None:
                kwargs["help"] = f"{help_text} (default: {default})"
        elif not optional:
            kwargs["required"] = True
        parser.add_argument(flag(f.name), dest=f.name, **kwargs)


def from_args(cls: type, ns: argparse.Namespace) -> Any:
    """The config ``cls`` from parsed arguments (its own validation runs)."""
    given = {}
    for name, f in fields(cls).items():
        if hasattr(ns, name):
            value = getattr(ns, name)
            if isinstance(value, list) and typing.get_origin(f.type) is not list:
                value = tuple(value)
            given[name] = value
    return cls(**given)


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


def check_mapping(cls: type, raw: Mapping[str, Any], allowed: typing.Iterable[str]) -> dict:
    """``raw``'s values type-checked against the fields of ``cls``; ``allowed`` are the keys
    it may hold. Raises :class:`OptionError` naming the first bad key."""
    allowed = sorted(allowed)
    for key in raw:
        if key not in allowed:
            raise OptionError(str(key), f"unknown key; expected one of {', '.join(allowed)}")
    return {key: check_value(cls, key, value) for key, value in raw.items()}


def check_value(cls: type, key: str, value: Any) -> Any:
    """``value`` as the type of field ``key`` of ``cls``, or :class:`OptionError`."""
    tp = typing.get_type_hints(cls)[key]
    ok, converted = _convert(value, tp)
    if not ok:
        raise OptionError(key, f"expected {_describe(tp)}, not {value!r}")
    return converted


def build(cls: type, given: Mapping[str, Any]) -> Any:
    """``cls(**given)``; an error its validation raises comes back as an :class:`OptionError`
    (with the field the config named, else none: ``field`` is "")."""
    try:
        return cls(**given)
    except OptionError:
        raise
    except UserError as err:
        raise OptionError("", str(err)) from None


def _convert(value: Any, tp: Any) -> tuple[bool, Any]:
    """(True, value as ``tp``) if the YAML value fits the annotation ``tp``, else (False, _)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return True, None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, converted = _convert(value, arg)
                if ok:
                    return True, converted
        return False, None
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list) or len(value) != len(args):
            return False, None
        parts = [_convert(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in parts), tuple(v for _, v in parts)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str) and value != "", value
    return False, None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} numbers"
    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return kinds.get(tp, str(tp))


__all__ = [
    "OptionError",
    "add_arguments",
    "build",
    "check_mapping",
    "check_value",
    "fields",
    "flag",
    "from_args",
    "hidden",
    "names",
    "option",
    "require_local_folder",
    "values",
]
