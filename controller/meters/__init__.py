"""Meter payload parsers: raw MQTT payloads -> one normalised value (pure, no I/O).

Power is normalised to W with the grid sign (+ import / - export) after the meter's ``sign``;
``vehicle_soc`` meters yield percent 0-100. Each configured meter gets one :class:`MeterParser`
from :func:`make_parser`; it names the topics it needs and turns ``(topic, payload)`` into a
:class:`ParsedValue`, or raises :class:`PayloadError` saying why the payload was refused.

Every payload format is a small :class:`FormatParser` class registered by its name
(``@register_meter_format("tasmota")``) in :mod:`controller.meters.formats`; :class:`MeterParser`
finds the meter's format with :func:`find_meter_format` and adds the checks every meter shares,
among them the role's physical bounds (:mod:`controller.meters.bounds`).
The presets: ``tasmota``, ``shelly_pro3em``, ``dsmr_reader``, ``plain`` and ``json`` (a number at
``json_path``); each class's docstring shows the payload it reads.

Adding a preset: a module in ``controller/meters/formats/`` with one registered class, its name in
``config.MeterFormat``, and real payloads in ``tests/test_meters.py``.
"""

from controller.meters import formats as formats  # registers the built-in formats
from controller.meters.bounds import (
    NEGATIVE_TOLERANCE_W,
    Bounds,
    ImplausibleReading,
    apply_bounds,
    meter_bounds,
    site_power_bound_w,
)
from controller.meters.parser import MeterParser, make_parser
from controller.meters.payload import MAX_METER_PAYLOAD_BYTES, MAX_POWER_W, ParsedValue, PayloadError
from controller.meters.registry import (
    FormatParser,
    find_meter_format,
    meter_format_names,
    register_meter_format,
)
from controller.values import parse_json_path

__all__ = [
    "MAX_METER_PAYLOAD_BYTES",
    "MAX_POWER_W",
    "NEGATIVE_TOLERANCE_W",
    "Bounds",
    "FormatParser",
    "ImplausibleReading",
    "MeterParser",
    "ParsedValue",
    "PayloadError",
    "apply_bounds",
    "find_meter_format",
    "make_parser",
    "meter_bounds",
    "meter_format_names",
    "parse_json_path",
    "register_meter_format",
    "site_power_bound_w",
]
