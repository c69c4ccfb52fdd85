"""HTTP API: health for probes, the site's state, plan and history, driver commands, the dashboard
and Prometheus metrics, on the daemon's event loop."""

from controller.api.auth import ApiAuth
from controller.api.routes import ApiBackend, create_app
from controller.api.server import ApiServer

__all__ = ["ApiAuth", "ApiBackend", "ApiServer", "create_app"]
