"""The built-in meter formats, one module each; importing this package registers every one.

Each module here is imported below, so a new preset is one new module holding one
``@register_meter_format`` class (with its name in ``config.MeterFormat``), and nothing else to
edit in ``controller.meters`` (the way evcc's vendors register themselves).
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
