"""Suite-wide hygiene: every test starts from the same structlog configuration, so a level or an
output set by one test (the CLI configures logging) cannot filter what a later test captures, and
log lines go through stdlib logging (not onto a captured stdout).

Hypothesis runs derandomized by default, so the suite gives the same answer on every run and every
machine; ``HYPOTHESIS_PROFILE=explore`` draws fresh random examples to hunt for new failures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import settings

from controller.passwords import hash_password
from controller.store import Store

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True)
def _fresh_structlog_config() -> Iterator[None]:
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    yield
    structlog.reset_defaults()


EXAMPLE_ENV = {"V2X_CHARGER_PASSWORD_HASH": hash_password("example-charger-password")}
"""What configs/home.example.yaml reads from the environment, without a default: the wallbox's
password hash (no shipped config carries one)."""


def stored(daemon: Any) -> Store:
    """A daemon's store once every write it queued is done (writes run on the store's own thread)."""
    daemon.persistence.writer.flushed().result(timeout=10)
    store: Store = daemon.store
    return store
