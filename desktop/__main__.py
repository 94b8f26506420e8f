"""`python -m desktop`: RefSheet Chat in its own window. The built app's executable runs this too.

python -m desktop                      the window (the first-run screen when no model is chosen yet); a
                                       second launch on the same data folder brings that window forward
python -m desktop --setup              the first-run screen again (in a running window: its dialog)
python -m desktop --version            the version (and, for a build, its engine and date)
python -m desktop --install-desktop-entry / --remove-desktop-entry
                                       add it to (or take it off) the application menu (Linux)
... --serve --port N --parent PID      (internal) the app's server, started by the window
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="RefSheetChat", description="RefSheet Chat in its own window.")
    parser.add_argument("--setup", action="store_true", help="choose the model or model server again")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="add RefSheet Chat to the application menu (Linux; this user only)")  # fmt: skip
    parser.add_argument("--remove-desktop-entry", action="store_true", help="take it off the application menu again")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from desktop import TITLE, version_text

        print(f"{TITLE} {version_text()}")
        return 0
    if args.install_desktop_entry or args.remove_desktop_entry:
        from desktop.system import install_desktop_entry, remove_desktop_entry

        done = install_desktop_entry() if args.install_desktop_entry else remove_desktop_entry()
        for path in done:
            print(path)
        return 0
    if args.serve:
        from desktop.server import serve

        serve(args.port, args.parent)
        return 0
    from desktop.config import logs_dir
    from desktop.system import setup_logging
    from desktop.window import run

    setup_logging(logs_dir())
    return run(setup=args.setup, started=started)


if __name__ == "__main__":
    sys.exit(main())
