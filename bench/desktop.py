"""The desktop app, measured: the one-folder build's size and build time, and the time from launch to a
usable window (the Home page drawn, its script finished), from the sources and from the build.

    python -m bench.desktop              # reuse the cached build if the sources have not changed
    python -m bench.desktop --fresh      # build again (minutes) and time it
    python -m bench.desktop --runs 3     # launches per variant (default 2: the first is colder)

Launches run under a private Xvfb (or the DISPLAY given with --display), with the tiny random Gemma 3
(REFSHEET_MODEL may name another), a fresh HOME each time, and are closed with SIGTERM (which closes
the window as its × does). Prints Markdown; writes bench/results/desktop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_xvfb() -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as fh:
        return proc, ":" + fh.readline().strip()


def launch_to_usable(command: list[str], display: str, model: str, extra_env: dict[str, str]) -> dict[str, float]:
    """Seconds from starting the process to the server answering and to the usable window; then closed."""
    with tempfile.TemporaryDirectory(prefix="refsheet-desktop-bench-") as tmp:
        home = Path(tmp)
        status = home / "status.jsonl"
        env = {k: v for k, v in os.environ.items() if k not in ("REFSHEET_DATA_DIR", "DATABASE_URL")}
        env.update({"DISPLAY": display, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
                    "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
                    "REFSHEET_MODEL": model, "REFSHEET_QUANTIZATION": "none", "REFSHEET_DEVICE": "cpu",
                    "HF_HUB_OFFLINE": "1", "REFSHEET_DESKTOP_STATUS": str(status), **extra_env})  # fmt: skip
        started = time.time()
        proc = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        events: dict[str, float] = {}
        try:
            deadline = started + 600
            while "usable" not in events and time.time() < deadline and proc.poll() is None:
                time.sleep(0.1)
                if status.exists():
                    for line in status.read_text().splitlines():
                        record = json.loads(line)
                        events.setdefault(record["event"], record["t"])
            if "usable" not in events:
                raise RuntimeError(f"{command[0]} did not show a usable window (events: {sorted(events)})")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {
            "server_answering_s": round(events["server"] - started, 2),
            "usable_s": round(events["usable"] - started, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="build again instead of reusing the cached build")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--display", default=None, help="an X display to use instead of a private Xvfb")
    args = parser.parse_args()

    from desktop.build import build, cache_root

    if args.fresh:
        shutil.rmtree(cache_root(), ignore_errors=True)
    report = build(cache=True)
    folder = Path(str(report["folder"]))

    model = os.environ.get("REFSHEET_MODEL", "")
    tiny_dir = None
    if not model:
        from bench.checkpoints import build_tiny

        tiny_dir = tempfile.mkdtemp(prefix="refsheet-tiny-")
        model = str(build_tiny(Path(tiny_dir)))

    xvfb, display = (None, args.display) if args.display else start_xvfb()
    variants = {
        "python -m desktop (sources)": ([sys.executable, "-m", "desktop"], {"PYTHONPATH": str(ROOT)}),
        "dist/RefSheetChat (build)": ([str(folder / "RefSheetChat")], {}),
    }
    launches: dict[str, list[dict[str, float]]] = {}
    try:
        for name, (command, extra) in variants.items():
            launches[name] = [launch_to_usable(command, display, model, extra) for _ in range(args.runs)]
    finally:
        if xvfb:
            xvfb.terminate()
        if tiny_dir:
            shutil.rmtree(tiny_dir, ignore_errors=True)

    size_mb = int(report["size_bytes"]) / 1e6
    print("## Desktop build and start-up\n")
    print(f"- Build: `{folder}`, **{size_mb:.0f} MB** on disk, built in **{report['build_seconds']} s**"
          f"{' (reused: the time of the build that made it)' if report['reused'] else ''}")  # fmt: skip
    print(f"- Files: {sum(1 for p in folder.rglob('*') if p.is_file())}\n")
    print("| Launch | run | server answering (s) | usable window (s) |")
    print("|---|---|---|---|")
    for name, runs in launches.items():
        for i, run in enumerate(runs, 1):
            print(f"| {name} | {i} | {run['server_answering_s']} | {run['usable_s']} |")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "desktop.json").write_text(json.dumps({"build": report, "launches": launches}, indent=2))


if __name__ == "__main__":
    main()
