"""Reading a config: the file (size and encoding guards), strict YAML (keys given twice),
``${VAR}`` / ``${VAR:-default}`` substitution with a bound on the tree, then validation."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.config.errors import ConfigError, ConfigIssue, _join, issues_from_validation_error
from controller.config.models import SiteConfig
from controller.config.repair import _cross_field_issues_of_the_rest

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A site with thousands of chargers stays far below this."""
MAX_CONFIG_NODES = 200_000
"""Values after YAML aliases are expanded: a few lines of nested aliases ("billion laughs") expand
to 10**9 values and would hang the loader."""
MAX_CONFIG_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that notes a key given twice in one mapping instead of silently keeping
    the last one (a second ``meters:`` block would drop the first). Merge keys (``<<: *base``) may
    still be overridden: only the keys written in the mapping itself are compared."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # (line, issue): mappings are not visited in the order they are written
        self.duplicates: list[tuple[int, ConfigIssue]] = []
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Called on every mapping before its merge keys are spliced in (possibly more than once,
        # when it is also a merge source): compare its own keys the first time only.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    issue = ConfigIssue(
                        f"line {line}",
                        f"key {str(key)!r} given twice (first on line {first_line[key]})",
                        "keep one of them: YAML would silently use only the last",
                    )
                    self.duplicates.append((line, issue))
                else:
                    first_line[key] = line
        super().flatten_mapping(node)


def _load_yaml(text: str) -> tuple[Any, list[ConfigIssue]]:
    """The YAML document in ``text`` and the keys given twice in it."""
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
        return data, [issue for _, issue in sorted(loader.duplicates, key=lambda found: found[0])]
    finally:
        loader.dispose()


class _TooLarge(Exception):
    """The config tree exceeds MAX_CONFIG_NODES or MAX_CONFIG_DEPTH."""


def _substitute_env(node: Any, env: Mapping[str, str], issues: list[ConfigIssue]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, collecting missing variables.

    Also bounds the tree (values after aliases are expanded, and nesting): raises ``_TooLarge``."""
    budget = MAX_CONFIG_NODES

    def walk(node: Any, path: str, depth: int) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0 or depth > MAX_CONFIG_DEPTH:
            raise _TooLarge(path)
        if isinstance(node, dict):
            return {k: walk(v, _join(path, str(k)), depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        if isinstance(node, str):

            def replace(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                value = env.get(name)
                # As in POSIX shells and Compose, ":-" also falls back when the variable is set but empty.
                if default is not None and not value:
                    return default
                if value is not None:
                    return value
                issues.append(
                    ConfigIssue(path, f"environment variable {name} is not set", _env_fix(name, path))
                )
                return ""

            return _ENV_PATTERN.sub(replace, node)
        return node

    return walk(node, "", 0)


def _env_fix(name: str, path: str) -> str:
    if path.endswith("password_hash"):
        return (
            f'export {name}="$(v2x hash-password)": it asks for the password set in the charger and '
            "prints its hash"
        )
    return f"export {name}=..."


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> SiteConfig:
    """Validate an already-parsed YAML/JSON tree into a SiteConfig, or raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("(top level)", "is not a mapping", "start with `site:`")])
    issues: list[ConfigIssue] = []
    try:
        data = _substitute_env(data, os.environ if env is None else env, issues)
    except _TooLarge as exc:
        where = str(exc) or "(top level)"
        problem = f"more than {MAX_CONFIG_NODES} values or nested deeper than {MAX_CONFIG_DEPTH} levels"
        raise ConfigError(
            source, [ConfigIssue(where, problem, "check YAML aliases (*name) and nesting")]
        ) from None
    if issues:
        raise ConfigError(source, issues)
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        issues = issues_from_validation_error(exc)
        if not any(error["type"] == "cross_field" for error in exc.errors(include_url=False)):
            issues += _cross_field_issues_of_the_rest(data, exc)
        raise ConfigError(source, issues) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> SiteConfig:
    """Read a YAML site config; every problem is reported as a ConfigError with paths and fixes."""
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            source, [ConfigIssue("(file)", f"cannot read: {exc.strerror}", "check the path")]
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    "(file)", f"is larger than {MAX_CONFIG_BYTES // 2**20} MiB", "is this the site config?"
                )
            ],
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source,
            [ConfigIssue("(file)", f"is not UTF-8 text (byte {exc.start})", "save the file as UTF-8")],
        ) from None
    try:
        data, duplicates = _load_yaml(text)
    except RecursionError:
        raise ConfigError(
            source, [ConfigIssue("(file)", "is nested too deeply", "check the brackets and indentation")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            source, [ConfigIssue(where, f"malformed YAML: {problem}", "fix the YAML syntax")]
        ) from None
    if duplicates:
        raise ConfigError(source, duplicates)
    return parse_config(data, source, env)
