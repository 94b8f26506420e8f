"""`python -m desktop.build`: the one-folder desktop build, dist/RefSheetChat/, from desktop/RefSheetChat.spec.

    python -m desktop.build                 build into dist/RefSheetChat/ (several minutes)
    python -m desktop.build --cache         build once per content into a cache folder and reuse it:
                                            the key is a hash of the app's sources, the requirements and
                                            the installed packages (the tests and CI use this)

Prints the folder, its size and the build time, and as the last line the same as JSON.
No model is bundled, and no secret: the spec takes .streamlit/config.toml only.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "desktop" / "RefSheetChat.spec"
NAME = "RefSheetChat"
SOURCES = ("Home.py", "pages", "core", "ui", "storage", "desktop", ".streamlit/config.toml")
MARKER = ".refsheet-build.json"


def cache_root() -> Path:
    base = os.environ.get("REFSHEET_BUILD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "refsheet-chat", "desktop-build"
    )
    return Path(base)


def source_key() -> str:
    """What the build depends on: the bundled sources, the requirements, the installed packages, Python."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files += sorted(ROOT.glob("requirements*.txt"))
    for path in files:
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    installed = sorted(f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions())
    digest.update("\n".join(installed).encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:20]


def folder_size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def run_pyinstaller(dist: Path, work: Path) -> float:
    started = time.monotonic()
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
               "--distpath", str(dist), "--workpath", str(work), str(SPEC)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True)
    return time.monotonic() - started


def build(cache: bool = False, dist: Path | None = None) -> dict[str, object]:
    """Build (or, with `cache`, reuse) the folder; returns where it is, its size and the build time."""
    if cache:
        key = source_key()
        home = cache_root()
        target = home / key / NAME
        marker = target / MARKER
        if marker.is_file():
            report = json.loads(marker.read_text())
            return {**report, "folder": str(target), "reused": True}
        for old in home.glob("*"):  # one build kept: a bundle is over a gigabyte
            shutil.rmtree(old, ignore_errors=True)
        seconds = run_pyinstaller(home / key, home / "work")
        shutil.rmtree(home / "work", ignore_errors=True)
    else:
        dist = dist or ROOT / "dist"
        target = dist / NAME
        seconds = run_pyinstaller(dist, ROOT / "build" / "pyinstaller")
    report = {"folder": str(target), "size_bytes": folder_size(target), "build_seconds": round(seconds, 1)}
    (target / MARKER).write_text(json.dumps(report))
    return {**report, "reused": False}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m desktop.build", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", action="store_true", help="build once per content into a cache folder")
    parser.add_argument("--dist", type=Path, default=None, help="where dist/RefSheetChat goes (default: dist/)")
    args = parser.parse_args(argv)
    report = build(cache=args.cache, dist=args.dist)
    size_mb = int(report["size_bytes"]) / 1e6
    how = "reused from the cache" if report["reused"] else f"built in {report['build_seconds']} s"
    print(f"{report['folder']}: {size_mb:.0f} MB, {how}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
