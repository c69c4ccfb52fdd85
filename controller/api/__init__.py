"""HTTP API: health and read-only state for probes, dashboards and the container health check."""

from controller.api.http import HealthServer, StatusProvider

__all__ = ["HealthServer", "StatusProvider"]
