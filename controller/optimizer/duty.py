"""Pulses below a charger's minimum power: what they put through the grid meter.

A charger cannot run between 0 and its minimum power ``P`` (6 A per phase: 4.14 kW on three
phases at 230 V). A step's average ``a < P`` is delivered as a pulse at ``P`` for the share ``a / P``
of the step. Against a home that draws ``L`` (load - PV, kW) with ``0 < L < P``, a discharge
pulse covers the home and exports ``P - L`` while it runs; in the pause the home imports ``L``.
Over the step: export ``d (1 - L / P)``, import ``L - d L / P``. The netted balance
``import - export = L - d`` still holds, so the one thing the LP needs on top of it is a lower
bound ``export >= phi d`` with ``phi = 1 - L / P`` (0 outside ``0 < L < P``). Charging against a
PV surplus ``S = pv - load`` mirrors it: ``import >= psi c``, ``psi = 1 - S / P``.

The bound is never tighter than the pulse itself: at or above ``P`` the netted export ``d - L`` is
at least ``phi d`` anyway, and where ``L <= 0`` the whole discharge is exported.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["grid_flows_kw", "own_use_limits", "pulse_shares"]

FloatArray = npt.NDArray[np.float64]


def pulse_shares(min_kw: FloatArray, flow_kw: FloatArray) -> FloatArray:
    """``(cars, steps)``: ``1 - flow / P`` where ``0 < flow < P``, else 0.

    With ``flow`` the home's net load (load - PV) this is the share of a discharge pulse that is
    exported (phi); with the PV surplus (PV - load) the share of a charging pulse that is imported
    (psi). ``min_kw`` (``P`` per car) of 0 gives no pulses at all.
    """
    p = min_kw[:, None]
    f = flow_kw[None, :]
    pulsed = (f > 0.0) & (f < p)
    shares: FloatArray = np.where(pulsed, 1.0 - f / np.where(pulsed, p, 1.0), 0.0)
    return shares


def own_use_limits(
    net_kw: FloatArray, min_kw: FloatArray, own_use: npt.NDArray[np.bool_]
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Where cars without V2G (``own_use``) may discharge: never into export, so only where the
    home's net load covers a pulse.

    Returns the cap on their discharge together (the net load where it covers the smallest of
    their pulses, else 0) and, per car and step, where a car's own pulse is not covered (its
    discharge is then 0; only cars with a minimum, so a charger without one changes nothing).
    """
    mins = min_kw[own_use]
    smallest = float(mins.min()) if len(mins) else 0.0
    cap: FloatArray = np.where((net_kw > 0.0) & (net_kw >= smallest), net_kw, 0.0)
    p = min_kw[:, None]
    blocked = own_use[:, None] & (p > 0.0) & (net_kw[None, :] < p)
    return cap, blocked


def grid_flows_kw(
    net_kw: FloatArray,
    charge_kw: FloatArray,
    discharge_kw: FloatArray,
    export_share: FloatArray,
    import_share: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Step-average grid import and export for a schedule, pulses included.

    The net (``net + charge - discharge``) splits into import or export, and a pulse raises both
    by the same amount: until the export reaches ``sum(phi d)`` and the import ``sum(psi c)``.
    """
    grid = net_kw + charge_kw.sum(axis=0) - discharge_kw.sum(axis=0)
    imported = np.maximum(grid, 0.0)
    exported = np.maximum(-grid, 0.0)
    pulsed_out = (export_share * discharge_kw).sum(axis=0)
    pulsed_in = (import_share * charge_kw).sum(axis=0)
    extra = np.maximum(np.maximum(pulsed_out - exported, pulsed_in - imported), 0.0)
    return imported + extra, exported + extra
