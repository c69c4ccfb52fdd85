"""Any JSON payload with the power (or SoC) at a configured path."""

from __future__ import annotations

from controller.config import MeterConfig
from controller.meters.payload import ParsedValue, load_json, number, walk
from controller.meters.registry import FormatParser, register_meter_format
from controller.values import parse_json_path

__all__ = ["JsonPath"]


@register_meter_format("json")
class JsonPath(FormatParser):
    """Any device's JSON: the number at ``json_path`` (dotted, list indexes as numbers: ``a.0.b``),
    a number or a numeric string, times ``scale``.

    Example, with ``json_path: data.meters.1.power_kw`` and ``scale: 1000``::

        {"data":{"meters":[{"power_kw":9},{"power_kw":"0.75"}]}}   -> 750 W
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        if not meter.json_path:
            raise ValueError("format json needs json_path")  # the config refuses such a meter first
        self._path = parse_json_path(meter.json_path)

    def parse(self, topic: str, payload: bytes) -> ParsedValue:
        return ParsedValue(number(walk(load_json(payload), self._path), "value") * self.meter.scale)
