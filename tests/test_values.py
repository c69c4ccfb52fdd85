"""Shared parsers for untrusted numbers and times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.values import finite_number, utc_from_iso


class Oops(ValueError):
    pass


@pytest.mark.parametrize(
    ("value", "strings", "expected"), [(7, False, 7.0), (-1.5, False, -1.5), ("7400.5", True, 7400.5)]
)
def test_numbers_accepted(value: Any, strings: bool, expected: float) -> None:
    assert finite_number(value, "x", Oops, strings=strings) == expected


@pytest.mark.parametrize(
    ("value", "strings", "message"),
    [
        (True, True, "x is true, not a number"),
        (None, True, "x is null, not a number"),
        ("12", False, "x is a str, not a number"),
        ("lots", True, "x 'lots' is not a number"),
        ({"a": 1}, True, "x is a dict, not a number"),
        (float("nan"), False, "x is not a finite number"),
        ("inf", True, "x is not a finite number"),
        (10**400, False, "x is too large"),
        ("\uff18\uff10", True, "x '\uff18\uff10' is not a plain ASCII number"),  # full-width 80
        ("\u0668\u0660", True, "x '\u0668\u0660' is not a plain ASCII number"),  # Arabic-Indic 80
    ],
)
def test_numbers_refused_with_the_callers_error(value: Any, strings: bool, message: str) -> None:
    with pytest.raises(Oops, match=f"^{message}$"):
        finite_number(value, "x", Oops, strings=strings)


def test_times_need_an_offset() -> None:
    assert utc_from_iso("2026-11-24T18:00:00+01:00", "t") == datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
    for bad, message in [
        (1700000000, "not a time string"),
        ("soon", "not an ISO 8601"),
        ("2026-11-24T18:00", "no timezone"),
    ]:
        with pytest.raises(Oops, match=message):
            utc_from_iso(bad, "t", Oops)


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999-23:59"]
)
def test_times_beyond_the_datetime_range_in_utc_are_refused_with_the_callers_error(value: str) -> None:
    with pytest.raises(Oops, match=r"^t '.*' is out of range$"):
        utc_from_iso(value, "t", Oops)
