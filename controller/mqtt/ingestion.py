"""Meter and signal messages into :class:`~controller.site_inputs.SiteInputs` (synchronous, no I/O).

Each configured topic routes to a meter parser or a signal parser. A payload that does not parse is
logged (rate limited, with its topic) and dropped; a meter reading outside its role's physical bounds
(:mod:`controller.meters.bounds`) is dropped and logged once per topic until that topic sends a
plausible reading again. Each refused meter message is counted per meter in the inputs. A callback
that fails is logged and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import aiomqtt
import structlog

from controller.clock import Clock
from controller.config import MeterConfig, SiteConfig
from controller.domain import MeterReading
from controller.meters import ImplausibleReading, MeterParser, PayloadError, make_parser
from controller.mqtt.connection import payload_bytes
from controller.mqtt.message_log import MessageCounts, ThrottledLog, payload_preview
from controller.signals import (
    SignalError,
    parse_grid_state,
    parse_limit_signal,
    parse_price_signal,
    parse_pv_forecast,
)
from controller.site_inputs import SITE_ROLES, PriceDirection, SiteInputs

__all__ = ["ReadingCallback", "SignalCallback", "SignalKind", "SiteIngestion"]

log = structlog.get_logger("controller.mqtt")

SignalKind = Literal["import_prices", "export_prices", "limits", "grid_state", "pv_forecast"]
ReadingCallback = Callable[[MeterReading], None]
SignalCallback = Callable[[SignalKind], None]

_METER_QOS = 0  # a fresher reading follows soon
_SIGNAL_QOS = 1


@dataclass(frozen=True, slots=True)
class _Route:
    kind: Literal["meter"] | SignalKind
    parser: MeterParser | None = None


class SiteIngestion:
    """Routes meter and signal topics to their parsers and the parsed values into the inputs."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock,
        inputs: SiteInputs,
        counts: MessageCounts,
        warnings: ThrottledLog,
        *,
        on_reading: ReadingCallback | None = None,
        on_signal: SignalCallback | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.inputs = inputs
        self._counts = counts
        self._warn = warnings
        self._on_reading = on_reading
        self._on_signal = on_signal
        self._routes: dict[str, list[_Route]] = {}
        self._subscriptions: dict[str, int] = {}
        self._implausible_topics: set[str] = set()  # logged once until a plausible reading
        self._build_routes()

    def _add_route(self, topic: str, route: _Route, qos: int) -> None:
        self._routes.setdefault(topic, []).append(route)
        self._subscriptions[topic] = max(qos, self._subscriptions.get(topic, 0))

    def _build_routes(self) -> None:
        for meter in self.cfg.meters:
            parser = make_parser(meter, self.cfg)
            for topic in parser.topics:
                self._add_route(topic, _Route("meter", parser), _METER_QOS)
        signal_topics: list[tuple[str | None, SignalKind]] = [
            (self.cfg.tariff.import_.dynamic_topic, "import_prices"),
            (self.cfg.tariff.export.dynamic_topic, "export_prices"),
            (self.cfg.grid_signals.limit_topic, "limits"),
            (self.cfg.grid_signals.outage_topic, "grid_state"),
            (self.cfg.forecast.pv_forecast_topic, "pv_forecast"),
        ]
        for signal_topic, kind in signal_topics:
            if signal_topic:
                self._add_route(signal_topic, _Route(kind), _SIGNAL_QOS)

    @property
    def subscriptions(self) -> dict[str, int]:
        """Meter and signal topic -> QoS."""
        return dict(self._subscriptions)

    def handles(self, topic: str) -> bool:
        return topic in self._routes

    def ingest_on_arrival(self, message: aiomqtt.Message) -> bool:
        """Handle a meter/signal message now; False leaves it (a command) to the async loop."""
        topic = message.topic.value
        if topic not in self._routes:
            return False
        try:
            self.ingest(topic, payload_bytes(message), retained=message.retain)
        except Exception:
            # Never let a bug in parsing reach paho's read loop, which would drop the connection.
            log.exception("ingest_failed", topic=topic)
        return True

    def ingest(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Parse a meter or signal message and update the inputs (synchronous, no I/O)."""
        now = self.clock.now()
        for route in self._routes.get(topic, ()):
            if route.parser is not None:
                self._ingest_meter(route.parser, topic, payload, retained, now)
            elif route.kind != "meter":
                self._ingest_signal(route.kind, topic, payload, now, retained)

    def _ingest_meter(
        self, parser: MeterParser, topic: str, payload: bytes, retained: bool, now: datetime
    ) -> None:
        meter: MeterConfig = parser.meter
        if retained and meter.role in SITE_ROLES:
            # A retained power value has an unknown age: it must not make a silent meter look fresh.
            log.debug("meter_retained_ignored", topic=topic, meter=meter.id)
            return
        # Other retained values (a car's SoC) are kept, marked retained: the daemon takes them as an
        # estimate to plan on, never as a reading that allows discharge.
        try:
            parsed = parser.parse(topic, payload)
        except ImplausibleReading as exc:
            self._drop_implausible(meter, topic, exc)
            return
        except PayloadError as exc:
            self._counts.rejected += 1
            self.inputs.count_dropped(meter.id)
            self._warn.warning(
                "meter_payload_rejected",
                topic,
                meter=meter.id,
                reason=str(exc),
                payload=payload_preview(payload),
            )
            return
        if parsed is None:
            return
        reading = MeterReading(meter.id, meter.role, parsed.value, now, retained=retained)
        self.inputs.update_meter(reading, parsed.phases_w)
        self._counts.accepted += 1
        if topic in self._implausible_topics:
            self._implausible_topics.discard(topic)
            log.info("meter_reading_plausible_again", topic=topic, meter=meter.id)
        if self._on_reading is not None:
            try:
                self._on_reading(reading)
            except Exception:
                log.exception("on_reading_failed", topic=topic, meter=meter.id)

    def _drop_implausible(self, meter: MeterConfig, topic: str, exc: ImplausibleReading) -> None:
        self._counts.rejected += 1
        self.inputs.count_dropped(meter.id)
        if topic in self._implausible_topics:
            return
        self._implausible_topics.add(topic)
        log.warning(
            "meter_payload_rejected",
            topic=topic,
            meter=meter.id,
            reason=str(exc),
            value=exc.value,
            bound=exc.bound,
            unit=exc.unit,
            dropped_readings=self.inputs.dropped_readings(meter.id),
        )

    def _ingest_signal(
        self, kind: SignalKind, topic: str, payload: bytes, received_at: datetime, retained: bool
    ) -> None:
        try:
            if not self._apply_signal(kind, topic, payload, received_at, retained):
                return
        except SignalError as exc:
            self._counts.rejected += 1
            self._warn.warning(
                "signal_rejected", topic, kind=kind, reason=str(exc), payload=payload_preview(payload)
            )
            return
        self._counts.accepted += 1
        log.info("signal_accepted", topic=topic, kind=kind)
        if self._on_signal is not None:
            try:
                self._on_signal(kind)
            except Exception:
                log.exception("on_signal_failed", topic=topic, kind=kind)

    def _apply_signal(
        self, kind: SignalKind, topic: str, payload: bytes, received_at: datetime, retained: bool
    ) -> bool:
        """Parse and store one signal; False when it changes nothing worth reporting (raises SignalError)."""
        if kind == "limits":
            self.inputs.update_limits(parse_limit_signal(payload, received_at), received_at)
        elif kind == "pv_forecast":
            self.inputs.update_pv_forecast(parse_pv_forecast(payload), received_at)
        elif kind == "grid_state":
            return self._apply_grid_state(topic, payload, received_at, retained)
        else:
            direction: PriceDirection = "import" if kind == "import_prices" else "export"
            self.inputs.update_prices(
                direction, parse_price_signal(payload, self.cfg.site.currency), received_at
            )
        return True

    def _apply_grid_state(self, topic: str, payload: bytes, received_at: datetime, retained: bool) -> bool:
        # A retained outage state (age unknown, sent again on every reconnect) only sets the state
        # while none is known: it must not keep an outage alive.
        lost = parse_grid_state(payload)
        if retained and self.inputs.grid_state_at is not None:
            log.debug("grid_state_retained_ignored", topic=topic, grid_lost=lost)
        if not self.inputs.update_grid_state(lost, received_at, retained=retained):
            return False
        log.warning("grid_state_changed", topic=topic, grid_lost=self.inputs.grid_lost, retained=retained)
        return True
