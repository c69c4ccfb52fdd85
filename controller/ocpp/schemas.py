"""OCPP payloads checked against the JSON schemas shipped with the ``ocpp`` package, and the CALLERROR
codes each version spells.

Which actions a version defines comes from the schema files too; a payload that breaks its schema
becomes the CALLERROR that describes why (1.6 validated with decimals, so ``multipleOf 0.1`` works).
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import ocpp.messages
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.exceptions import best_match

from controller.config import OcppVersion

__all__ = ["OcppCallError", "error_code", "has_response", "known_actions", "schema_error"]

_SCHEMA_ROOT = Path(ocpp.messages.__file__).resolve().parent
_SCHEMA_DIRS = {OcppVersion.V16: "v16", OcppVersion.V201: "v201", OcppVersion.V21: "v21"}


class OcppCallError(Exception):
    """Raised by a handler to answer a CALL with a CALLERROR (code as in OCPP 2.x; see ``error_code``)."""

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


# 1.6 spells two error codes differently and has no RpcFrameworkError / MessageTypeNotSupported:
# an RPC-level fault (unreadable frame structure, a message type 1.6 does not define) is its
# ProtocolError. (1.6's NotSupported means "a known action we do not support".)
_V16_CODES = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "RpcFrameworkError": "ProtocolError",
    "MessageTypeNotSupported": "ProtocolError",
}


def error_code(version: OcppVersion, code: str) -> str:
    """``code`` (as OCPP 2.x names it) as ``version`` spells it."""
    return _V16_CODES.get(code, code) if version is OcppVersion.V16 else code


@cache
def known_actions(version: OcppVersion) -> frozenset[str]:
    """Every action the version defines, from the schema files (also guards the file lookup)."""
    names: set[str] = set()
    for path in (_SCHEMA_ROOT / _SCHEMA_DIRS[version] / "schemas").glob("*.json"):
        stem = path.stem
        if stem.endswith("Response"):
            continue
        names.add(stem.removesuffix("Request") if version is not OcppVersion.V16 else stem)
    return frozenset(names)


def _schema_path(version: OcppVersion, action: str, response: bool) -> Path | None:
    if action not in known_actions(version):
        raise KeyError(action)
    folder = _SCHEMA_ROOT / _SCHEMA_DIRS[version] / "schemas"
    if response:
        names = [f"{action}Response.json"]
    else:  # 2.x names requests ...Request.json, except 2.1's SEND-only messages (no suffix)
        names = (
            [f"{action}.json"] if version is OcppVersion.V16 else [f"{action}Request.json", f"{action}.json"]
        )
    return next((folder / name for name in names if (folder / name).is_file()), None)


def has_response(version: OcppVersion, action: str) -> bool:
    """False for 2.1's SEND-only messages, which have no answer to give."""
    return _schema_path(version, action, True) is not None


@cache
def _validator(version: OcppVersion, action: str, response: bool) -> Draft4Validator:
    path = _schema_path(version, action, response)
    if path is None:
        raise KeyError(f"{action} has no {'response' if response else 'request'} schema")
    # 1.6 uses multipleOf 0.1: floats would fail it (21.4 / 0.1 != 214), decimals do not.
    parse_float: Callable[[str], Any] = decimal.Decimal if version is OcppVersion.V16 else float
    return Draft4Validator(json.loads(path.read_text(encoding="utf-8-sig"), parse_float=parse_float))


_SCHEMA_CODES = {
    "type": "TypeConstraintViolation",
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "additionalProperties": "FormatViolation",
    "enum": "PropertyConstraintViolation",
    "maxLength": "PropertyConstraintViolation",
    "minLength": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
}


def schema_error(
    version: OcppVersion, action: str, payload: Any, *, response: bool = False
) -> OcppCallError | None:
    """None if ``payload`` is valid for ``action``; otherwise the CALLERROR that describes why."""
    validator = _validator(version, action, response)
    if version is OcppVersion.V16:
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    error: SchemaError | None = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    code = _SCHEMA_CODES.get(str(error.validator), "FormatViolation")
    where = "/".join(str(p) for p in error.absolute_path) or "payload"
    return OcppCallError(error_code(version, code), f"{where}: {error.message}"[:512])
