"""PV forecast services, one module each, registered by their config ``type``; they return a
``controller.signals.PowerForecast`` (W per window)."""
