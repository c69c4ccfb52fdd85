"""Schema-driven fuzzing of the HTTP API (schemathesis, from the OpenAPI document) against a
throwaway daemon (``v2x run``, a real process on its own store): no 5xx, every response matching
its schema. The live stream is left out (it never ends); login is left out (it is throttled)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from tests.chaos_support import chaos_site, poll_api
from tests.daemon_support import running_daemon

TOKEN = "fuzz-token"


async def test_the_api_survives_schema_driven_fuzzing(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("schemathesis is not installed (dev extra)")
    site, api = chaos_site(tmp_path, "fuzz", 1883)
    site.tree["api"]["token"] = TOKEN
    async with running_daemon(site):
        await poll_api(api, "/health", lambda h: h["stopped_tasks"] == [], 15, "the daemon running")
        run = await asyncio.create_subprocess_exec(
            cli,
            "run",
            f"http://127.0.0.1:{api}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--exclude-path",
            "/api/login",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--request-timeout",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(run.communicate(), 100)
    text = output.decode(errors="replace")
    assert run.returncode == 0, text[-6000:]
