"""`python -m desktop.build`: the one-folder desktop build, dist/RefSheetChat/, from desktop/RefSheetChat.spec.

    python -m desktop.build                       build into dist/RefSheetChat/ (several minutes)
    python -m desktop.build --engine transformers the build with torch and transformers instead of llama.cpp
    python -m desktop.build --cache               build once per content into a cache folder and reuse it:
                                                  the key is a hash of the app's sources, the requirements,
                                                  the installed packages and the engine (the tests and CI)

The default engine is llama.cpp (`gguf`: GGUF models, requirements-laptop.txt, no torch); `transformers`
needs requirements-local.txt installed. Prints the folder, its size and the build time, and as the last
line the same as JSON. No model is bundled, and no secret: the spec takes .streamlit/config.toml only.
The folder also gets the icon and a menu entry for Linux (RefSheetChat.png, RefSheetChat.desktop) and a
record of the build (.refsheet-build.json: engine, version, date, key; no path of the building machine).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from desktop import APP_NAME, BUILD_RECORD, VERSION

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "desktop" / "RefSheetChat.spec"
NAME = APP_NAME
SOURCES = ("Home.py", "pages", "core", "ui", "storage", "desktop", ".streamlit/config.toml")
MARKER = BUILD_RECORD
ENGINES = {"gguf": "llama.cpp", "transformers": "transformers"}  # --engine -> what the record and About say


def cache_root() -> Path:
    base = os.environ.get("REFSHEET_BUILD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "refsheet-chat", "desktop-build"
    )
    return Path(base)


def source_key(engine: str = "gguf") -> str:
    """What the build depends on: the bundled sources, the requirements, the installed packages, Python, the engine."""
    digest = hashlib.sha256(engine.encode() + b"\0")
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


def run_pyinstaller(dist: Path, work: Path, engine: str) -> float:
    started = time.monotonic()
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
               "--distpath", str(dist), "--workpath", str(work), str(SPEC)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "REFSHEET_DESKTOP_ENGINE": engine})
    return time.monotonic() - started


def add_extras(target: Path) -> None:
    """Beside the executable: the icon, and a menu entry for a folder installed on PATH (Linux; per user,
    `RefSheetChat --install-desktop-entry` writes one with the full path)."""
    from desktop.system import desktop_entry

    shutil.copyfile(ROOT / "desktop" / "icons" / f"{NAME}.png", target / f"{NAME}.png")
    if sys.platform.startswith("linux"):
        entry = desktop_entry([NAME], icon=NAME).replace("\n", f"\nTryExec={NAME}\n", 1)
        (target / f"{NAME}.desktop").write_text(entry, encoding="utf-8")


def build(cache: bool = False, dist: Path | None = None, engine: str = "gguf") -> dict[str, object]:
    """Build (or, with `cache`, reuse) the folder; returns where it is, its size and the build time."""
    key = source_key(engine)
    if cache:
        home = cache_root()
        target = home / f"{engine}-{key}" / NAME
        marker = target / MARKER
        if marker.is_file():
            report = json.loads(marker.read_text())
            return {**report, "folder": str(target), "reused": True}
        for old in home.glob(f"{engine}-*"):  # one build of each engine kept
            shutil.rmtree(old, ignore_errors=True)
        for old in home.glob("[0-9a-f]" * 20):  # and none of the kind before engines had names
            shutil.rmtree(old, ignore_errors=True)
        seconds = run_pyinstaller(target.parent, home / f"work-{engine}", engine)
        shutil.rmtree(home / f"work-{engine}", ignore_errors=True)
    else:
        dist = dist or ROOT / "dist"
        target = dist / NAME
        seconds = run_pyinstaller(dist, ROOT / "build" / "pyinstaller", engine)
    add_extras(target)
    report = {
        "engine": ENGINES[engine],
        "version": VERSION,
        "key": key,
        "built": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "build_seconds": round(seconds, 1),
        "size_bytes": folder_size(target),
    }
    (target / MARKER).write_text(json.dumps(report))
    return {**report, "folder": str(target), "reused": False}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m desktop.build", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", action="store_true", help="build once per content into a cache folder")
    parser.add_argument("--dist", type=Path, default=None, help="where dist/RefSheetChat goes (default: dist/)")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="gguf",
                        help="gguf: llama.cpp, no torch (default); transformers: torch and transformers")  # fmt: skip
    args = parser.parse_args(argv)
    report = build(cache=args.cache, dist=args.dist, engine=args.engine)
    size_mb = int(report["size_bytes"]) / 1e6
    how = "reused from the cache" if report["reused"] else f"built in {report['build_seconds']} s"
    print(f"{report['folder']}: {size_mb:.0f} MB ({report['engine']}), {how}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
