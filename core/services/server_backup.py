"""The whole server's backup, for its operator: `python -m core.services.server_backup backup|restore FILE`.

The app's own backup (Library → Backup and restore) holds only the person's own library: nobody,
admins included, can download another person's conversations through a page. Whoever runs the
server can read its database anyway, so the whole-server backup (every person's characters and
conversations, restored to their owners, known by their identity provider's issuer and subject) is a
command run there, with the app's settings (DATABASE_URL or REFSHEET_DATA_DIR, from the environment
or `.streamlit/secrets.toml`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from sqlalchemy.engine import Engine

from core.base.errors import UserError
from core.base.settings import load_settings
from core.formats.backup import Manifest
from core.services import backup
from core.services.access import LOCAL_USER
from storage.db import DatabaseProblem, open_database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.services.server_backup", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["backup", "restore"], help="write FILE, or restore from it")
    parser.add_argument("file", type=Path, help="the backup's zip file")
    args = parser.parse_args(argv)
    url = load_settings().database_url
    try:
        db = open_database(url)
    except DatabaseProblem as problem:
        print(f"The database {problem.where} cannot be used ({problem.code}). {problem.detail}", file=sys.stderr)
        return 2
    try:
        if args.action == "backup":
            manifest = _write(db, args.file)
            counts = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in sorted(manifest.counts.items()))
            print(f"Wrote {args.file}: {counts}.")
        else:
            report = backup.restore(db, LOCAL_USER, args.file.read_bytes(), args.file.name, everyone=True)
            print(f"Restored {args.file}: {report}")
    except UserError as exc:
        print(exc.message("en"), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    return 0


def _write(db: Engine, target: Path) -> Manifest:
    """The whole server into `target`, readable by its owner only (it holds everyone's conversations),
    written beside it under a temporary name and renamed when complete: a failed run leaves an
    earlier backup of that name as it was."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(descriptor, "wb") as out:  # mkstemp makes it 0600
            manifest = backup.write_backup(db, LOCAL_USER, out, everyone=True)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return manifest


if __name__ == "__main__":
    sys.exit(main())
