"""Config problems: ConfigIssue (where, what, how to fix it), ConfigError, and the translation of
pydantic's validation errors into issues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError
from pydantic_core.core_schema import ErrorType

from controller.config.fields import _num
from controller.logs import is_secret_key


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config: where (``vehicles[0].reserve.percent``), what, and how to fix it."""

    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" ({self.fix})" if self.fix else "")


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source}: " + "; ".join(str(i) for i in issues))


Loc = tuple[int | str, ...]
"""Where a value sits in the config tree: ("vehicles", 0, "reserve"). ``"*"`` stands for any index."""

_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a problem with a mapping key, not its value
            path += " (key)"
        else:
            path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path or "(top level)"


def _shown(value: Any, path_parts: tuple[int | str, ...]) -> str:
    """The offending value for a message: never a secret, never a screenful."""
    if any(isinstance(part, str) and is_secret_key(part) for part in path_parts):
        return "the value"
    shown = repr(value) if isinstance(value, str) else str(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


_BOUNDS = {
    "less_than_equal": ("is above", "le", "use a value of at most {b}"),
    "less_than": ("is not below", "lt", "use a value below {b}"),
    "greater_than_equal": ("is below", "ge", "use a value of at least {b}"),
    "greater_than": ("is not above", "gt", "use a value above {b}"),
}
"""pydantic's bound errors: kind -> (what the value is, the ctx key of the bound, the fix)."""

_NOT_A_NUMBER = ("{shown} is not a number", "write a plain number")
_HHMM = "write HH:MM in quotes, e.g. '07:30'"
_PROBLEMS: dict[str, tuple[str, str]] = {
    "missing": ("is required", "add this field"),
    "extra_forbidden": ("is not a known field", "remove it or check its spelling"),
    "float_parsing": _NOT_A_NUMBER,
    "float_type": _NOT_A_NUMBER,
    "int_parsing": _NOT_A_NUMBER,
    "int_type": _NOT_A_NUMBER,
    "int_parsing_size": _NOT_A_NUMBER,
    "int_from_float": ("{shown} is not a whole number", "write a whole number"),
    "finite_number": ("{shown} is not a finite number", "write a plain number"),
    "string_type": ("{shown} is not text", "write text, in quotes if it looks like a number"),
    "string_too_short": ("is empty", "write a value or remove the field"),
    "string_too_long": ("is too long", "use at most {max_length} characters"),
    "too_short": ("is empty", "list at least {min_length} item(s)"),
    "too_long": ("has too many items", "list at most {max_length}"),
    "path_type": ("{shown} is not a file name", "write a path such as /data/v2x.sqlite"),
    "storage_path": ("{shown} is not a file name", "write a path such as /data/v2x.sqlite"),
    "invalid_key": ("{shown} is not a name", "keys are names such as site or chargers"),
    "clock_time": ("{shown} is not {msg}", _HHMM),
    "bool_parsing": ("{shown} is not true/false", "write true or false"),
    "bool_type": ("{shown} is not true/false", "write true or false"),
    "literal_error": ("{shown} is not allowed", "use one of {expected}"),
    "enum": ("{shown} is not allowed", "use one of {expected}"),
    "model_type": ("{shown} is not a mapping", "write key: value pairs under it"),
    "dict_type": ("{shown} is not a mapping", "write key: value pairs under it"),
    "model_attributes_type": ("{shown} is not a mapping", "write key: value pairs under it"),
    "list_type": ("{shown} is not a list", "write a YAML list (- item)"),
    "string_pattern_mismatch": (
        "{shown} has characters that are not allowed",
        "use letters, digits, - _ . :",
    ),
    "time_parsing": ("{shown} is not a time", _HHMM),
    "time_type": ("{shown} is not a time", _HHMM),
}
"""pydantic's other error kinds people meet: kind -> (what is wrong, how to fix it), as templates of
``shown`` (the value), ``msg`` (pydantic's message) and the ``min_length``/``max_length``/``expected``
of its ctx."""


def _describe(error: Mapping[str, Any]) -> ConfigIssue:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
    shown = _shown(error.get("input"), loc)
    path = _loc_to_path(loc)
    if kind in _BOUNDS:
        return _bound_issue(path, shown, kind, ctx)
    if kind in _PROBLEMS:
        return _known_issue(path, shown, kind, ctx, error)
    return _other_issue(path, kind, error)


def _bound_issue(path: str, shown: str, kind: str, ctx: Mapping[str, Any]) -> ConfigIssue:
    """A value outside a ``ge``/``gt``/``le``/``lt`` bound, with the bound."""
    phrase, key, fix = _BOUNDS[kind]
    bound = _num(ctx[key])
    return ConfigIssue(path, f"{shown} {phrase} {bound}", fix.format(b=bound))


def _known_issue(
    path: str, shown: str, kind: str, ctx: Mapping[str, Any], error: Mapping[str, Any]
) -> ConfigIssue:
    """An error kind in ``_PROBLEMS``, its templates filled in."""
    problem, fix = _PROBLEMS[kind]
    values = {
        "shown": shown,
        "msg": error.get("msg"),
        "min_length": ctx.get("min_length"),
        "max_length": ctx.get("max_length"),
        "expected": ctx.get("expected", ""),
    }
    return ConfigIssue(path, problem.format_map(values), fix.format_map(values))


def _other_issue(path: str, kind: str, error: Mapping[str, Any]) -> ConfigIssue:
    """Our own checks ("what is wrong; how to fix it"), or pydantic's message as it is."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind not in _PYDANTIC_ERROR_TYPES:  # our own checks: "what is wrong; how to fix it"
        what, _, fix = message.partition("; ")
        return ConfigIssue(path, what, fix)
    return ConfigIssue(path, message, "see `v2x schema` for what this field takes")


def issues_from_validation_error(exc: ValidationError) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for error in exc.errors(include_url=False):
        if error["type"] == "cross_field":
            issues.extend(error["ctx"]["issues"])
        else:
            issues.append(_describe(error))
    return issues
