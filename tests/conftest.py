"""Suite-wide hygiene: every test starts from the same structlog configuration, so a level or an
output set by one test (the CLI configures logging) cannot filter what a later test captures, and
log lines go through stdlib logging (not onto a captured stdout)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog_config() -> Iterator[None]:
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    yield
    structlog.reset_defaults()
