"""Virtual home meters on MQTT, in the payload formats the daemon reads (``controller.meters``).

* :class:`ShellyPro3EM`: the grid meter, ``<prefix>/status/em:0`` with ``total_act_power`` and the
  phases ``a/b/c_act_power`` (format ``shelly_pro3em``);
* :class:`TasmotaPower`: a PV meter (or any power meter), ``tele/<device>/SENSOR`` with
  ``{"ENERGY": {"Power": W}}`` (format ``tasmota``);
* :class:`SocMeter`: a car's state of charge, a bare number (``plain``) or a number at a JSON path
  (``json``).

Each builds its ``payload(...)`` bytes and its ``meters:`` config entry (:meth:`config`);
:class:`HomeMeters` groups one home's meters, and :class:`VirtualMeters` publishes them every
``period_s`` of a :class:`~controller.clock.Clock` (not retained, QoS 0, as the devices do) with the
values a callback returns::

    meters = HomeMeters.under("home", vehicles=["car"])
    tree["meters"] = meters.config_entries()           # the site config the daemon reads
    async with VirtualMeters(meters, lambda: MeterValues(grid_w=1200.0), port=broker.port):
        ...
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import aiomqtt

from controller.clock import Clock, SystemClock
from controller.values import parse_json_path

__all__ = [
    "HomeMeters",
    "MeterValues",
    "ShellyPro3EM",
    "SocMeter",
    "TasmotaPower",
    "VirtualMeters",
]

log = logging.getLogger(__name__)

Json = dict[str, Any]
Phases = tuple[float, float, float]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def _entry(meter_id: str, role: str, topic: str, fmt: str, stale_after_s: float) -> Json:
    """A ``meters:`` entry of the site config, as every virtual meter describes itself."""
    return {"id": meter_id, "role": role, "topic": topic, "format": fmt, "stale_after_s": stale_after_s}


@dataclass(frozen=True, slots=True)
class MeterValues:
    """What the meters read now. A value that is None is not published this round (a silent meter)."""

    grid_w: float | None = None
    """Grid power, W: + import, - export."""
    grid_phases_w: Phases | None = None
    """L1, L2, L3 of the grid power, W (signed like ``grid_w``); None: the meter sends only the total."""
    pv_w: float | None = None
    """PV production, W >= 0."""
    soc_percent: Mapping[str, float] = field(default_factory=dict)
    """State of charge, percent, per vehicle id."""


@dataclass(frozen=True, slots=True)
class ShellyPro3EM:
    """A Shelly Pro 3EM grid meter publishing its ``em:0`` status (``status_ntf``)."""

    topic: str = "shellypro3em-grid/status/em:0"
    id: str = "grid"
    stale_after_s: float = 30.0
    format: ClassVar[str] = "shelly_pro3em"
    role: ClassVar[str] = "grid"

    def payload(self, total_w: float, phases_w: Phases | None = None) -> bytes:
        """The status object: ``total_act_power`` and, with ``phases_w``, ``a/b/c_act_power``."""
        status: Json = {"id": 0}
        if phases_w is not None:
            a, b, c = phases_w
            status |= {"a_act_power": float(a), "b_act_power": float(b), "c_act_power": float(c)}
        status["total_act_power"] = float(total_w)
        return _dumps(status)

    def config(self) -> Json:
        return _entry(self.id, self.role, self.topic, self.format, self.stale_after_s)


@dataclass(frozen=True, slots=True)
class TasmotaPower:
    """A Tasmota energy meter's telemetry (``tele/<device>/SENSOR``), ``role`` ``pv`` by default."""

    topic: str = "tele/pv-inverter/SENSOR"
    id: str = "pv"
    role: str = "pv"
    stale_after_s: float = 30.0
    format: ClassVar[str] = "tasmota"

    def payload(self, power_w: float, at: datetime | None = None) -> bytes:
        """``{"Time": .., "ENERGY": {"Power": W}}``; ``Time`` is the device's local time without an
        offset (the daemon ignores it), here ``at`` as given."""
        message: Json = {}
        if at is not None:
            message["Time"] = at.strftime("%Y-%m-%dT%H:%M:%S")
        message["ENERGY"] = {"Power": float(power_w)}
        return _dumps(message)

    def config(self) -> Json:
        return _entry(self.id, self.role, self.topic, self.format, self.stale_after_s)


@dataclass(frozen=True, slots=True)
class SocMeter:
    """A vehicle's state of charge in percent: a bare number (format ``plain``, as TeslaMate's
    ``battery_level``), or with ``json_path`` the number at that path of a JSON object (``json``)."""

    topic: str
    vehicle: str
    id: str = ""
    json_path: str | None = None
    stale_after_s: float = 900.0
    role: ClassVar[str] = "vehicle_soc"

    @property
    def meter_id(self) -> str:
        return self.id or f"{self.vehicle}-soc"

    @property
    def format(self) -> str:
        return "json" if self.json_path else "plain"

    def payload(self, soc_percent: float) -> bytes:
        value = float(soc_percent)
        if not self.json_path:
            return repr(value).encode()
        return _dumps(_nest(parse_json_path(self.json_path), value))

    def config(self) -> Json:
        entry = _entry(self.meter_id, self.role, self.topic, self.format, self.stale_after_s)
        entry["vehicle"] = self.vehicle
        if self.json_path:
            entry["json_path"] = self.json_path
        return entry


def _nest(path: tuple[str | int, ...], value: float) -> Any:
    """The smallest JSON value holding ``value`` at ``path`` (an int part indexes a list)."""
    node: Any = value
    for part in reversed(path):
        node = [None] * part + [node] if isinstance(part, int) else {part: node}
    return node


@dataclass(frozen=True, slots=True)
class HomeMeters:
    """One home's meters: a grid meter, optionally PV, and SoC topics per vehicle."""

    grid: ShellyPro3EM | None = None
    pv: TasmotaPower | None = None
    soc: tuple[SocMeter, ...] = ()

    @classmethod
    def under(
        cls,
        prefix: str,
        vehicles: Iterable[str] = (),
        *,
        pv: bool = True,
        soc_json_path: str | None = None,
        stale_after_s: float = 30.0,
    ) -> HomeMeters:
        """A Shelly grid meter, a Tasmota PV meter and a SoC topic per vehicle, all under ``prefix``
        (``<prefix>/shellypro3em-grid/status/em:0``, ``<prefix>/tele/pv/SENSOR``,
        ``<prefix>/cars/<id>/soc``); SoC as JSON when ``soc_json_path`` is given."""
        base = prefix.strip("/")
        return cls(
            grid=ShellyPro3EM(f"{base}/shellypro3em-grid/status/em:0", stale_after_s=stale_after_s),
            pv=TasmotaPower(f"{base}/tele/pv/SENSOR", stale_after_s=stale_after_s) if pv else None,
            soc=tuple(SocMeter(f"{base}/cars/{v}/soc", v, json_path=soc_json_path) for v in vehicles),
        )

    def config_entries(self) -> list[Json]:
        """The site config's ``meters:`` entries for these meters (plain dicts, YAML-ready)."""
        meters: list[ShellyPro3EM | TasmotaPower | SocMeter] = [
            m for m in (self.grid, self.pv) if m is not None
        ]
        return [m.config() for m in (*meters, *self.soc)]

    def messages(self, values: MeterValues, at: datetime | None = None) -> list[tuple[str, bytes]]:
        """(topic, payload) of every meter that has a value in ``values``."""
        out: list[tuple[str, bytes]] = []
        if self.grid is not None and values.grid_w is not None:
            out.append((self.grid.topic, self.grid.payload(values.grid_w, values.grid_phases_w)))
        if self.pv is not None and values.pv_w is not None:
            out.append((self.pv.topic, self.pv.payload(values.pv_w, at)))
        for meter in self.soc:
            soc = values.soc_percent.get(meter.vehicle)
            if soc is not None:
                out.append((meter.topic, meter.payload(soc)))
        return out


class VirtualMeters:
    """Publishes ``meters`` with the values of ``values()`` every ``period_s`` of ``clock`` (a
    :class:`~controller.clock.ScaledClock` makes the rounds come faster), not retained, QoS 0.

    ``start`` connects (within ``connect_timeout_s`` real seconds) and publishes the first round at
    once; if the broker goes away it reconnects every period until stopped. A failing ``values``
    callback skips that round (logged). ``rounds`` and ``published`` count what went out.
    """

    def __init__(
        self,
        meters: HomeMeters,
        values: Callable[[], MeterValues],
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        clock: Clock | None = None,
        period_s: float = 1.0,
        client_id: str | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not period_s > 0:
            raise ValueError("period_s must be above 0")
        self.meters = meters
        self.values = values
        self.host = host
        self.port = port
        self.clock: Clock = clock or SystemClock()
        self.period_s = period_s
        self.client_id = client_id or f"virtual-meters-{uuid.uuid4().hex[:8]}"
        self.connect_timeout_s = connect_timeout_s
        self.rounds = 0
        self.published = 0
        self.last_values: MeterValues | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def config_entries(self) -> list[Json]:
        """The ``meters:`` entries of the site config matching what this publishes."""
        return self.meters.config_entries()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the virtual meters are already running")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"virtual-meters-{self.client_id}")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            await self.stop()
            raise TimeoutError(
                f"virtual meters: no MQTT connection to {self.host}:{self.port} "
                f"within {self.connect_timeout_s} s"
            ) from None

    async def stop(self) -> None:
        """Disconnect and end the publishing task; idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        # A flag as well as cancel: on Python 3.11 aiomqtt's internal wait_for can swallow a cancel
        # that lands mid-publish, and the loop must still end.
        self._stopping.set()
        for _ in range(50):
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
            if task.done():
                break
        else:
            log.warning("virtual meters: the publishing task did not end within 5 s")
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("virtual meters task failed", exc_info=task.exception())

    async def publish_now(self) -> int:
        """Publish one round now (besides the periodic ones); the number of messages sent."""
        if self._client is None:
            raise RuntimeError("the virtual meters are not connected")
        return await self._publish_round(self._client)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id) as client:
                    self._client = client
                    self._connected.set()
                    while not self._stopping.is_set():
                        await self._publish_round(client)
                        await self.clock.sleep(self.period_s)
            except aiomqtt.MqttError as exc:
                if self._connected.is_set():
                    log.warning("virtual meters lost the broker: %s", exc)
            finally:
                self._client = None
                self._connected.clear()
            if not self._stopping.is_set():
                await self.clock.sleep(self.period_s)

    async def _publish_round(self, client: aiomqtt.Client) -> int:
        try:
            values = self.values()
            messages = self.meters.messages(values, self.clock.now())
        except Exception:
            log.exception("virtual meters: the values callback failed; round skipped")
            return 0
        for topic, payload in messages:
            await client.publish(topic, payload, qos=0, retain=False)
        self.last_values = values
        self.rounds += 1
        self.published += len(messages)
        return len(messages)
