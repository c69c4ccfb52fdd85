"""Drive tests/interop/charger.js (ocpp-rpc on Node) from a test over JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.ocpp_support import wait_until

INTEROP = Path(__file__).resolve().parent.parent / "interop"


class NodeChargerError(Exception):
    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class NodeCharger:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(json.loads(raw))

    async def opened(self) -> dict[str, Any]:
        return await wait_until(  # type: ignore[no-any-return]
            lambda: next(
                (x for x in self.lines if x.get("event") in ("open", "connect_failed", "close")), None
            ),
            10,
            "the node charger to connect",
        )

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        request_id = next(self._ids)
        self.process.stdin.write(
            (json.dumps({"id": request_id, "call": action, "params": params}) + "\n").encode()
        )
        await self.process.stdin.drain()
        reply = await wait_until(
            lambda: next((x for x in self.lines if x.get("id") == request_id), None), 10, f"{action} answer"
        )
        if "error" in reply:
            raise NodeChargerError(reply["error"]["code"], reply["error"]["message"])
        result: dict[str, Any] = reply["result"]
        return result

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [x["params"] for x in self.lines if x.get("event") == "call" and x.get("method") == method]


@contextlib.asynccontextmanager
async def node_charger(
    port: int, identity: str, protocols: list[str], **options: Any
) -> AsyncIterator[NodeCharger]:
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "ocpp-rpc").is_dir():
        raise RuntimeError(
            "the interop client is not installed: run `make unit` (npm ci --prefix tests/interop)"
        )
    settings = {
        "endpoint": f"ws://127.0.0.1:{port}/ocpp",
        "identity": identity,
        "protocols": protocols,
        **options,
    }
    process = await asyncio.create_subprocess_exec(
        node,
        str(INTEROP / "charger.js"),
        json.dumps(settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=INTEROP,
    )
    charger = NodeCharger(process)
    try:
        yield charger
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        charger._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await charger._reader
