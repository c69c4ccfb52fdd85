"""Size limits of the code, checked in the lint step (``make lint``): no module in ``controller/`` or
``sim/`` over 600 lines, no class over 300 lines. Function complexity (mccabe, at most 15) is ruff's
C901. An exception is listed in ``EXCEPTIONS`` with its reason in docs/architecture.md.

    python -m tests.code_size        # exit 1 and one line per breach
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controller", "sim")
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300
EXCEPTIONS: dict[str, str] = {}
"""``path`` or ``path::Class`` -> why splitting it would make the code worse (see docs/architecture.md)."""


def breaches(root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            lines = len(text.splitlines())
            if lines > MAX_MODULE_LINES and name not in EXCEPTIONS:
                found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    size = node.end_lineno - node.lineno + 1
                    key = f"{name}::{node.name}"
                    if size > MAX_CLASS_LINES and key not in EXCEPTIONS:
                        found.append(f"{key}: {size} lines (at most {MAX_CLASS_LINES})")
    return found


def main() -> int:
    found = breaches()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
