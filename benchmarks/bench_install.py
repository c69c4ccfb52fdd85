"""Runtime install size: the daemon's package installed into a fresh venv, as the image does it.

``pip install --constraint constraints.txt .`` (no extras) into a throwaway venv, then the size of its
site-packages: in all, what a fresh venv brings by itself (pip, setuptools), the daemon's share (the
target: at most 330 MB), and what the image deletes on top (the packages' own test suites).
Needs the package registry.

    .venv/bin/python benchmarks/bench_install.py
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_OWN = ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth")
MB = 1e6


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def site_packages(venv: Path) -> Path:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--constraint", str(ROOT / "constraints.txt"), str(ROOT)], check=True)
        site = site_packages(venv)
        total = tree_bytes(site)
        venv_own = sum(tree_bytes(entry) for entry in site.iterdir() if entry.name.split("-")[0] in VENV_OWN)
        tests = sum(tree_bytes(d) for d in site.glob("*/**/tests") if d.is_dir())
        largest = sorted(((tree_bytes(e), e.name) for e in site.iterdir()), reverse=True)[:6]
    daemon = total - venv_own
    print(f"python {sysconfig.get_python_version()}, site-packages of a fresh venv: {total / MB:.0f} MB")
    print(f"  the venv's own pip and setuptools: {venv_own / MB:.0f} MB")
    print(f"  the daemon's runtime install: {daemon / MB:.0f} MB (target <= 330 MB)")
    print(f"  of which the packages' test suites (deleted in the image): {tests / MB:.0f} MB")
    print(f"  in the image: {(daemon - tests) / MB:.0f} MB")
    print("  largest: " + ", ".join(f"{name} {size / MB:.0f} MB" for size, name in largest))
    return 0 if daemon <= 330 * MB else 1


if __name__ == "__main__":
    sys.exit(main())
