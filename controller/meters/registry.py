"""Meter formats by name: the interface every format implements, and the registry the core looks in.

A format is one small class: it is built from one meter's config, names the topics it reads, and
turns ``(topic, payload)`` into a :class:`~controller.meters.payload.ParsedValue` in the meter's own
units with ``scale`` applied (or None while it has no reading yet). The core
(:class:`~controller.meters.parser.MeterParser`) applies what every meter shares: ``sign``, the
plausibility bounds and the role's checks. A format never sees another meter's or format's state.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

from controller.config import MeterConfig
from controller.meters.payload import ParsedValue

__all__ = ["FormatParser", "find_meter_format", "meter_format_names", "register_meter_format"]


class FormatParser(ABC):
    """One meter's reader for one payload format; subclass it and register it by name.

    ``parse`` returns the value in W (+ import, before the meter's ``sign``) or percent for a
    ``vehicle_soc`` meter, with ``scale`` applied where the format uses it; None when the message
    holds no reading for this meter; it raises :class:`~controller.meters.payload.PayloadError` for
    anything unusable. State a format holds across messages is its own; state that a refused reading
    must not change is committed in :meth:`accepted`.
    """

    format: ClassVar[str]
    """The name it is registered under, as written in ``meters[].format``."""

    def __init__(self, meter: MeterConfig) -> None:
        self.meter = meter

    @property
    def topics(self) -> tuple[str, ...]:
        """The MQTT topics this meter is read from (by default its configured topic)."""
        return (self.meter.topic,)

    @abstractmethod
    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        """The reading in one message on one of :attr:`topics`."""

    def accepted(self) -> None:  # noqa: B027 - an optional hook; most formats hold nothing
        """Called after the core accepted the value the last ``parse`` returned."""


_P = TypeVar("_P", bound=type[FormatParser])

_FORMATS: dict[str, type[FormatParser]] = {}


def register_meter_format(name: str) -> Callable[[_P], _P]:
    """Class decorator: ``@register_meter_format("tasmota")`` makes the class the parser of that format."""

    def register(cls: _P) -> _P:
        if not name or name != name.strip():
            raise ValueError(f"meter format name {name!r} is empty or has surrounding spaces")
        if inspect.isabstract(cls):
            raise TypeError(
                f"{cls.__qualname__} does not implement parse(); it cannot read meter format {name}"
            )
        existing = _FORMATS.get(name)
        if existing is not None:
            raise ValueError(f"meter format {name} is already read by {existing.__qualname__}")
        cls.format = name
        _FORMATS[name] = cls
        return cls

    return register


def find_meter_format(name: str) -> type[FormatParser]:
    """The parser class registered for ``name`` (a ``config.MeterFormat`` is its name)."""
    try:
        return _FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(_FORMATS))
        raise LookupError(f"no parser for meter format {str(name)!r}; known: {known}") from None


def meter_format_names() -> frozenset[str]:
    return frozenset(_FORMATS)
