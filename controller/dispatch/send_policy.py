"""When a command goes out: a deadband and a rate limit, except what safety or a renewal needs now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.domain import Plan

__all__ = ["SendPolicy", "SentCommand"]


@dataclass(slots=True)
class SentCommand:
    """What was last sent to one charger."""

    setpoint_w: float
    at: datetime
    plan_created_at: datetime | None
    discharge_ends_at: datetime | None = None
    """Where the sent schedule itself ends (or lowers) its live discharge: renewed before then."""


@dataclass(frozen=True, slots=True)
class SendPolicy:
    deadband_w: float
    min_resend_interval: timedelta
    renew_margin: timedelta
    """How long before a sent schedule ends its discharge a new one goes out."""

    def should_send(
        self,
        last: SentCommand | None,
        setpoint_w: float,
        now: datetime,
        plan: Plan | None,
        urgent: bool,
        discharge_ends_at: datetime | None = None,
    ) -> bool:
        """Deadband and rate limit, except that safety clamps and start/stop go out at once, and a
        discharge the last schedule ends soon is renewed once the new one holds it longer."""
        if last is None:
            return True
        if self._renewal_due(last, now, discharge_ends_at):
            return True
        change = abs(setpoint_w - last.setpoint_w)
        if change == 0 and (plan is None or plan.created_at == last.plan_created_at):
            return False
        if (setpoint_w == 0.0) != (last.setpoint_w == 0.0):
            return True
        if urgent and abs(setpoint_w) < abs(last.setpoint_w):
            return True
        if plan is not None and plan.created_at != last.plan_created_at:
            return True  # a new plan changes the later periods of the schedule
        return change > self.deadband_w and now - last.at >= self.min_resend_interval

    def _renewal_due(self, last: SentCommand, now: datetime, discharge_ends_at: datetime | None) -> bool:
        return (
            last.discharge_ends_at is not None
            and now >= last.discharge_ends_at - self.renew_margin
            and (discharge_ends_at is None or discharge_ends_at > last.discharge_ends_at)
        )
