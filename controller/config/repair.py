"""The repair pass: on a config with field errors, take the bad values out and run the cross-field
checks on what is left, so that one run reports every problem."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from controller.config.checks import _PARTIAL, _Checks, _cross_field_issues
from controller.config.errors import ConfigIssue, Loc
from controller.config.models import SiteConfig

_PLACEHOLDERS: dict[str, Any] = {
    "site": {"grid": {"import_limit_kw": 0}},
    "tariff": {"import": {"static_price_per_kwh": 0}},
}
"""Stand-ins for the required top-level sections when they cannot be read, so that the cross-field
checks still run on the rest (any check reading them is not reported)."""
_MAX_REPAIRS = 12


class _Repair:
    """A copy of a config tree with the values that fail validation taken out, round by round: a bad
    field goes (its default applies), a bad list item or mapping entry goes, a missing required field
    takes its container with it. Locations of what was taken are kept as the user wrote them."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.tree = copy.deepcopy(data)
        self.repaired: list[Loc] = []
        self._origin: dict[int, list[int]] = {}  # id(list in tree) -> original index of each item

    def original(self, loc: Loc) -> Loc:
        """``loc`` in the repaired tree -> the same place in the tree the user wrote."""
        node: Any = self.tree
        out: list[int | str] = []
        for part in loc:
            if isinstance(node, list) and isinstance(part, int):
                origin = self._origin.get(id(node))
                out.append(origin[part] if origin is not None and 0 <= part < len(origin) else part)
                node = node[part] if 0 <= part < len(node) else None
            else:
                out.append(part)
                node = node.get(part) if isinstance(node, dict) else None
        return tuple(out)

    def remove(self, errors: list[Any]) -> bool:
        """Take out what ``errors`` (pydantic's ``errors()``) point at; False when nothing could be."""
        targets: list[tuple[Any, int | str]] = []
        placed = False
        for error in errors:
            loc: Loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
            if "[key]" in loc:  # a bad mapping key: the whole entry goes
                loc = loc[: loc.index("[key]")]
            if error["type"] == "missing":
                if len(loc) == 1 and isinstance(loc[0], str) and loc[0] in _PLACEHOLDERS:
                    self.tree[loc[0]] = copy.deepcopy(_PLACEHOLDERS[loc[0]])
                    self.repaired.append(loc)
                    placed = True
                    continue
                loc = loc[:-1]
            if not loc:
                return False
            parent: Any = self.tree
            for part in loc[:-1]:
                try:
                    parent = parent[part]
                except (KeyError, IndexError, TypeError):
                    parent = None
                    break
            key = loc[-1]
            present = (isinstance(parent, dict) and key in parent) or (
                isinstance(parent, list) and isinstance(key, int) and 0 <= key < len(parent)
            )
            if present and not any(p is parent and k == key for p, k in targets):
                self.repaired.append(self.original(loc))
                targets.append((parent, key))
        if not targets:
            return placed
        # Later list items first, so that earlier indices stay valid.
        for parent, key in sorted(targets, key=lambda t: t[1] if isinstance(t[1], int) else -1, reverse=True):
            if isinstance(parent, dict):
                parent.pop(key, None)
            elif isinstance(key, int) and key < len(parent):
                origin = self._origin.setdefault(id(parent), list(range(len(parent))))
                del parent[key], origin[key]
        return True


def _cross_field_issues_of_the_rest(data: dict[str, Any], first: ValidationError) -> list[ConfigIssue]:
    """The cross-field problems among the parts of ``data`` that are valid on their own, when
    ``first`` says that some are not (pydantic runs the cross-field checks only on a valid whole)."""
    repair = _Repair(data)
    errors = first.errors(include_url=False)
    for _ in range(_MAX_REPAIRS):
        if not repair.remove(errors):
            return []
        try:
            cfg = SiteConfig.model_validate(repair.tree, context={_PARTIAL: True})
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            continue
        checks = _Checks(where=repair.original, repaired=tuple(repair.repaired))
        return _cross_field_issues(cfg, checks)
    return []
