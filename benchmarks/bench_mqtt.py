"""MQTT meter ingestion: messages/s and latency through the real client (parse + state update).

A publisher process sends Shelly Pro 3EM ``status/em:0`` payloads to the broker; this process runs
``SiteMqttClient`` (one asyncio thread) and records when each reading has reached ``SiteInputs``.

Two phases:

1. saturation, ``--duration`` seconds (default 30): the publisher stays at most ``--window``
   messages ahead of the consumer (so no queue grows without bound, on the broker or here) and sends
   as fast as that allows -> the msg/s the client ingests from what the broker delivers, and latency;
2. paced, ``--paced`` seconds (default 10; 0 skips it): the publisher sends at ``--rate`` msg/s
   (default 5000, the target) -> latency at that load.

Latency is publish call -> reading stored, both stamped with the system-wide monotonic clock. The
consumer is one asyncio thread: its CPU time is reported as a share of one core. The run is bounded:
at most ``--duration`` + ``--paced`` seconds of publishing plus a drain of a few seconds.

    .venv/bin/python benchmarks/bench_mqtt.py [--duration 30] [--paced 10] [--rate 5000] [--host 127.0.0.1 --port 1883]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
import uuid
from array import array
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.clock import SystemClock
from controller.config import parse_config
from controller.domain import MeterReading
from controller.meters.bounds import site_power_bound_w
from controller.mqtt import SiteMqttClient

PAYLOAD = (
    '{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_aprt_power":951.9,"a_pf":1.00,'
    '"a_freq":50.0,"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,"b_aprt_power":951.8,'
    '"b_pf":1.00,"b_freq":50.0,"c_current":3.03,"c_voltage":236.097,"c_act_power":715.1,'
    '"c_aprt_power":715.9,"c_pf":1.00,"c_freq":50.0,"n_current":null,"total_current":11.087,'
    '"total_act_power":%d,"total_aprt_power":2619.726,"user_calibrated_phase":[]}'
)
SEQ_MODULO = 1_000_000
"""The sequence number travels as the power value, so it must stay within the grid meter's plausible
bound: the consumer's site is a 1000 kW connection (bound 1.5 MW), checked at start."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect(host: str, port: int) -> socket.socket:
    """A bare MQTT 3.1.1 connection (keepalive off): the publisher must cost far less than the consumer."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = f"bench-pub-{uuid.uuid4().hex[:8]}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"broker refused the connection: {connack!r}")
    return sock


def _packet(topic: bytes, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    return b"\x30" + _varint(len(body)) + body


def publish(
    host: str,
    port: int,
    topic: str,
    phases: list[tuple[float, float]],
    window: int,
    processed: Synchronized[int],
    drained: Any,
    out: Connection,
) -> None:
    """Publisher process: per phase (seconds, rate; 0 = window-limited), send and stamp each message."""
    sock = _connect(host, port)
    topic_b = topic.encode()
    sent_ns = array("q")
    boundaries: list[int] = []
    seq = 0
    for index, (seconds, rate) in enumerate(phases):
        if index > 0:
            drained.wait(15)  # let the consumer empty its queue between phases
        boundaries.append(seq)
        start = time.monotonic()
        end = start + seconds
        first = seq
        while (now := time.monotonic()) < end:
            if rate > 0:
                ahead = (seq - first) / rate - (now - start)
                if ahead > 0.0005:
                    time.sleep(ahead)
                batch = 1
            else:
                room = window - (seq - processed.value)
                if room <= 0:
                    time.sleep(0.0001)
                    continue
                batch = min(room, 50)
            stamp = time.monotonic_ns()
            chunk = b"".join(
                _packet(topic_b, (PAYLOAD % ((seq + i) % SEQ_MODULO)).encode()) for i in range(batch)
            )
            for _ in range(batch):
                sent_ns.append(stamp)
            sock.sendall(chunk)
            seq += batch
    boundaries.append(seq)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    out.send((sent_ns.tobytes(), boundaries))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def consume(args: argparse.Namespace) -> int:
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}/shelly/status/em:0"
    cfg = parse_config(
        {
            "site": {"grid": {"import_limit_kw": 1000.0}},
            "meters": [{"id": "grid", "role": "grid", "topic": topic, "format": "shelly_pro3em"}],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
            "mqtt": {
                "host": args.host,
                "port": args.port,
                "client_id": f"bench-{uuid.uuid4().hex[:8]}",
                "base_topic": f"{prefix}/v2x",
                "homeassistant_discovery": False,
            },
        }
    )
    if site_power_bound_w(cfg) < SEQ_MODULO:
        raise SystemExit("bench_mqtt: the sequence numbers would exceed the grid meter's plausible bound")
    ctx = mp.get_context("spawn")  # a fresh interpreter: the publisher shares nothing with the consumer
    processed: Synchronized[int] = ctx.Value("q", 0, lock=False)
    recv_ns = array("q")
    recv_seq = array("q")

    def on_reading(reading: MeterReading) -> None:
        recv_ns.append(time.monotonic_ns())
        seq = int(reading.value)
        recv_seq.append(seq)
        processed.value = len(recv_ns)

    client = SiteMqttClient(cfg, SystemClock(), on_reading=on_reading, max_queued_messages=args.window * 4)
    task = asyncio.create_task(client.run())
    await client.wait_connected(10)

    phases = [(args.duration, 0.0)]
    if args.paced > 0:
        phases.append((args.paced, float(args.rate)))
    drained = ctx.Event()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=publish,
        args=(args.host, args.port, topic, phases, args.window, processed, drained, sender),
        daemon=True,
    )
    cpu0, wall0 = time.process_time(), time.monotonic()
    proc.start()
    # Drain detection between the phases: no new reading for 0.3 s after the first phase.
    await asyncio.sleep(args.duration + 0.5)
    last = -1
    while len(recv_ns) != last:
        last = len(recv_ns)
        await asyncio.sleep(0.3)
    drained.set()
    result = await asyncio.to_thread(_recv, receiver, args.paced + 60)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await asyncio.to_thread(proc.join, 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    raw, boundaries = result
    sent = array("q")
    sent.frombytes(raw)
    print(
        f"bench_mqtt: broker {args.host}:{args.port}, saturation {args.duration:g} s, "
        f"paced {args.paced:g} s at {args.rate} msg/s, pid {os.getpid()}"
    )
    per_msg_us = 1e6 * cpu / max(1, len(recv_ns))
    print(
        f"  consumer CPU {cpu:.1f} s over {wall:.1f} s wall ({100 * cpu / wall:.0f} % of one core), "
        f"{per_msg_us:.0f} us CPU per message (~{1e6 / per_msg_us:,.0f} msg/s per core)"
    )
    names = ["saturation (window-limited)", f"paced at {args.rate} msg/s"][: len(phases)]
    ok = True
    for phase, name in enumerate(names):
        lo, hi = boundaries[phase], boundaries[phase + 1]
        lat_ms: list[float] = []
        times: list[int] = []
        for seq_mod, t in zip(recv_seq, recv_ns, strict=True):
            seq = _unwrap(seq_mod, lo, hi)
            if seq is not None:
                lat_ms.append((t - sent[seq]) / 1e6)
                times.append(t)
        count = hi - lo
        span_s = (max(times) - sent[lo]) / 1e9 if times else float("nan")
        rate = len(times) / span_s if times else 0.0
        print(
            f"  {name}: sent {count}, ingested {len(times)} ({count - len(times)} lost), "
            f"{rate:,.0f} msg/s, latency p50 {percentile(lat_ms, 0.5):.2f} ms "
            f"p99 {percentile(lat_ms, 0.99):.2f} ms max {max(lat_ms, default=float('nan')):.2f} ms"
            + (f", mean {statistics.fmean(lat_ms):.2f} ms" if lat_ms else "")
        )
        if phase == 0:
            ok = rate >= 5000
    print(f"  target >= 5,000 msg/s: {'met' if ok else 'NOT met'}")
    return 0


def _unwrap(seq_mod: int, lo: int, hi: int) -> int | None:
    """Map a received (modulo) sequence number back into this phase's range."""
    base = lo - lo % SEQ_MODULO
    for candidate in (base + seq_mod, base + SEQ_MODULO + seq_mod):
        if lo <= candidate < hi:
            return candidate
    return None


def _recv(conn: Connection, timeout_s: float) -> tuple[bytes, list[int]]:
    if not conn.poll(timeout_s):
        raise RuntimeError("publisher did not report")
    data: tuple[bytes, list[int]] = conn.recv()
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of saturation publishing (default 30)"
    )
    parser.add_argument(
        "--paced", type=float, default=10.0, help="seconds of publishing at --rate (default 10; 0 skips)"
    )
    parser.add_argument("--rate", type=int, default=5000, help="msg/s of the paced phase (default 5000)")
    parser.add_argument("--window", type=int, default=2000, help="max messages in flight when saturating")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be within 1-600 s")
    if not 0 <= args.paced <= 600:
        parser.error("--paced must be within 0-600 s")
    if args.rate < 1:
        parser.error("--rate must be at least 1 msg/s")
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt's per-message queue warnings
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(consume(args))


if __name__ == "__main__":
    raise SystemExit(main())
