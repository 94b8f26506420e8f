"""`python -m desktop`: RefSheet Chat in its own window. The built app's executable runs this too.

python -m desktop            the window (the first-run screen when no model is chosen yet)
python -m desktop --setup    the first-run screen again, to choose another model or server
... --serve --port N --parent PID   (internal) the app's server, started by the window
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> None:
    started = time.time()
    parser = argparse.ArgumentParser(prog="RefSheetChat", description="RefSheet Chat in its own window.")
    parser.add_argument("--setup", action="store_true", help="choose the model or model server again")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve:
        from desktop.server import serve

        serve(args.port, args.parent)
        return
    from desktop.window import run

    run(setup=args.setup, started=started)


if __name__ == "__main__":
    main()
