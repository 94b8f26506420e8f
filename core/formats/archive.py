"""Zip files from strangers (CHARX cards, library backups), opened without trusting what they say.

A member's name must be a plain relative path (no `..`, no absolute path, no drive, no backslash),
its declared size within the limit, and what actually inflates is counted as it comes: a zip bomb
that lies about its sizes is stopped at the limit, not after it has filled the memory.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.base.errors import UserError

CHUNK = 1 << 20


class ArchiveError(UserError):
    """A zip that cannot be opened safely; the message names the file (and the member, if one)."""

    namespace = "archive"


@dataclass(frozen=True)
class ZipLimits:
    member_bytes: int = 64 * 2**20  # one inflated member
    total_bytes: int = 512 * 2**20  # everything inflated
    members: int = 10_000


def safe_name(name: str) -> bool:
    """A member name that stays inside the folder it is unpacked to, on every system."""
    if not name or "\\" in name or "\0" in name or name.startswith("/") or ":" in name.split("/", 1)[0]:
        return False
    parts = PurePosixPath(name).parts
    return all(part not in ("..", ".") for part in parts) and not any(ord(c) < 32 for c in name)


def read_zip(raw: bytes, file_name: str, limits: ZipLimits = ZipLimits()) -> dict[str, bytes]:
    """Every file in the zip by name, or `ArchiveError` saying what is wrong: not a zip, an unsafe
    path, too many members, a member or the whole too large once inflated, damaged."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError("not_zip", name=file_name) from exc
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > limits.members:
            raise ArchiveError("too_many", name=file_name, count=len(infos), limit=limits.members)
        for info in infos:
            if not safe_name(info.filename):
                raise ArchiveError("unsafe_path", name=file_name, member=info.filename[:200])
            if info.file_size > limits.member_bytes:
                raise ArchiveError("too_large", name=file_name, member=info.filename, limit_mb=_mb(limits.member_bytes))
        if sum(info.file_size for info in infos) > limits.total_bytes:
            raise ArchiveError("too_large", name=file_name, member="*", limit_mb=_mb(limits.total_bytes))
        files: dict[str, bytes] = {}
        total = 0
        for info in infos:
            if info.filename in files:  # two members of one name: which one is meant cannot be known
                raise ArchiveError("duplicate", name=file_name, member=info.filename[:200])
            data = _inflate(archive, info, file_name, limits.member_bytes)
            total += len(data)
            if total > limits.total_bytes:
                raise ArchiveError("too_large", name=file_name, member="*", limit_mb=_mb(limits.total_bytes))
            files[info.filename] = data
        return files


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_name: str, limit: int) -> bytes:
    out = bytearray()
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                out += chunk
                if len(out) > limit:
                    raise ArchiveError("too_large", name=file_name, member=info.filename, limit_mb=_mb(limit))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveError("damaged", name=file_name, member=info.filename) from exc
    return bytes(out)


def write_zip(files: dict[str, bytes]) -> bytes:
    """A zip of these files; pictures (already compressed) are stored, the rest deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            stored = name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))
            archive.writestr(name, data, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _mb(size: int) -> int:
    return max(size // 2**20, 1)
