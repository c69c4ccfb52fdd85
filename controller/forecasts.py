"""Where the daemon's forecasts come from: home load and PV learnt from their own history in the store,
PV forecasts the daemon fetches (blended with the measured PV, :mod:`controller.forecast.pv_blend`),
and a PV forecast from MQTT, which wins where it covers a step.

The daemon records the history here (``record_flows``, each dispatch tick: home = grid + PV - cars -
home batteries, when all are known) and asks for per-step forecasts at each re-plan (``forecasts``,
in a worker thread). The forecasting itself is pure (:mod:`controller.forecast`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from controller.config import SiteConfig
from controller.domain import align_to_step
from controller.forecast import forecast_load_w, forecast_pv_w
from controller.forecast.profile import DEFAULT_BLEND_HOURS, PV_RATIO_HOURS, history_grid
from controller.forecast.pv_blend import LOOKBACK_HOURS, blend_pv_w
from controller.signals import PowerForecast
from controller.signals.payload import Segment
from controller.signals.resample import mean_on_grid
from controller.signals.timeline import Timeline
from controller.site import FloatArray, Site
from controller.site_batteries import home_load_w
from controller.site_inputs import SiteInputs
from controller.store import Store

__all__ = ["HOME_LOAD_SERIES", "PV_SERIES", "ForecastService"]

# History series the forecasts learn from (stored like meters, downsampled to one minute).
HOME_LOAD_SERIES = "_home_load"
PV_SERIES = "_pv"


class ForecastService:
    def __init__(self, cfg: SiteConfig, store: Store, site: Site) -> None:
        self.cfg = cfg
        self.store = store
        self.site = site
        self.inputs: SiteInputs = site.inputs
        # Fetched PV forecasts per source (newest fetch wins where windows overlap; the recent past
        # is kept to compare with the measured PV). The worker thread reads only the resolved
        # segments, a mapping replaced whole on each update, never changed in place.
        self._fetched_pv: dict[str, Timeline] = {}
        self._fetched_pv_segments: Mapping[str, tuple[Segment, ...]] = {}

    def record_flows(self, now: dt.datetime) -> None:
        """Home load and PV for the forecasts: home = grid + PV - cars - home batteries, when all are
        known (:func:`controller.site_batteries.home_load_w`; a stale PV meter is not 0 W)."""
        pv = self.inputs.pv_power_w(now)
        if pv is not None:
            self.store.record_reading(PV_SERIES, now, max(0.0, pv))
        home = home_load_w(self.site, now)
        if home is not None:
            self.store.record_reading(HOME_LOAD_SERIES, now, home)

    def pv_external(self, now: dt.datetime) -> dict[dt.datetime, float]:
        """The MQTT PV forecast on the plan grid, step start -> W, where it covers the step (read on
        the event loop: it changes there)."""
        step = self.site.step
        start = align_to_step(now, step)
        steps = self.cfg.site.steps
        pv_w, covered = self.inputs.pv_forecast_on_grid(start, step, steps)
        return {start + i * step: float(pv_w[i]) for i in range(steps) if covered[i]}

    def update_fetched_pv(self, source: str, forecast: PowerForecast, received_at: dt.datetime) -> None:
        """Add a PV forecast fetched from ``source`` (a name per configured service, e.g.
        ``"open_meteo"``; the arrays already summed): called on the event loop. Where several sources
        cover a step the plan uses their mean, corrected by the measured PV (``pv_blend``)."""
        timeline = self._fetched_pv.setdefault(source, Timeline(name=f"fetched PV forecast {source}"))
        timeline.add(forecast.segments, received_at, forecast.issued_at)
        self._fetched_pv_segments = {**self._fetched_pv_segments, source: tuple(timeline.segments())}

    def _pv_w(
        self, history: list[tuple[dt.datetime, float]], start: dt.datetime, external: dict[dt.datetime, float]
    ) -> FloatArray:
        """PV per plan step: fetched forecasts blended with the measured PV, the history profile
        where none covers a step, the MQTT forecast where it covers one."""
        step, steps = self.site.step, self.cfg.site.steps
        profile = forecast_pv_w(history, start, step, steps, days=self.cfg.forecast.pv_history_days)
        fetched = self._fetched_pv_segments  # read once: replaced whole on the event loop
        pv = profile
        if fetched:
            recent = max(1, round(LOOKBACK_HOURS * 3600 / step.total_seconds()))
            since = start - recent * step
            pv = blend_pv_w(
                [mean_on_grid(segments, start, step, steps) for segments in fetched.values()],
                profile,
                history_grid(history, start, step, recent),
                [mean_on_grid(segments, since, step, recent) for segments in fetched.values()],
                step,
            ).power_w
        for i in range(steps):
            value = external.get(start + i * step)
            if value is not None:
                pv[i] = max(0.0, value)
        return pv

    def forecasts(
        self, now: dt.datetime, pv_external: dict[dt.datetime, float] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Home load and PV per plan step; fetched PV forecasts blended with the measured PV where
        they cover a step, a PV forecast from MQTT wins where it covers one.

        Reads the store: called in a worker thread, with ``pv_external`` read on the loop.
        """
        settings = self.cfg.forecast
        step = self.site.step
        start = align_to_step(now, step)
        steps = self.cfg.site.steps
        # The profiles of the last hours (the recent-bias window) reach that much further back.
        load_since = now - dt.timedelta(weeks=settings.load_history_weeks, hours=DEFAULT_BLEND_HOURS)
        pv_since = now - dt.timedelta(days=settings.pv_history_days, hours=PV_RATIO_HOURS)
        load = self.store.history_means(HOME_LOAD_SERIES, load_since, now, step)
        pv = self.store.history_means(PV_SERIES, pv_since, now, step)
        external = self.pv_external(now) if pv_external is None else pv_external
        return (
            forecast_load_w(
                load,
                start,
                step,
                steps,
                weeks=settings.load_history_weeks,
                default_w=settings.default_home_load_w,
            ),
            self._pv_w(pv, start, external),
        )
