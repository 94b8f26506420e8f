"""Chats as files: Markdown to read, and SillyTavern's chat JSONL to move a conversation there and back.

Pure format code (no database, no Streamlit): a `Chat` in, text out, and a file in, a `Chat` out.

SillyTavern keeps a chat as JSON Lines: a header `{user_name, character_name, create_date,
chat_metadata}`, then one object per message `{name, is_user, is_system, send_date, mes, extra}`; a
message with alternatives ("swipes") adds `swipes` (the texts), `swipe_id` (the shown one, whose text is
also `mes`) and `swipe_info` (per swipe: `send_date`, `gen_started`, `gen_finished`, `extra`). Our
alternatives of a turn are its swipes, the chosen one its `swipe_id`.

Times: SillyTavern has written `send_date` in several forms over the years (epoch milliseconds,
"June 19, 2023 2:20pm", its "humanized" "2024-6-5 @14h 56m 50s 682ms"); its reader
(`public/scripts/utils.js` `parseTimestamp`) takes all three and reads the humanized form as UTC. We
write the humanized form in UTC (to the millisecond, read by every version), and read all of them plus
ISO 8601; a time without a zone is UTC, one that cannot be read is "now".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.base.errors import UserError
from core.base.i18n import t
from core.base.text import clean_text, dumps, loads
from storage.tables import as_utc  # a time without a zone (SQLite's, or a file's) is UTC

MAX_CHAT_BYTES = 32 * 2**20  # long SillyTavern chats with many swipes are a few MB
MAX_MESSAGES = 20_000  # message lines in one file
MAX_ALTERNATIVES = 100_000  # swipes, all messages together
META_KEY = "refsheet"  # our own entry in `chat_metadata` (SillyTavern keeps keys it does not know)


class ChatFileError(UserError):
    """A file that is not a SillyTavern chat we can read; the message names the file and the line."""

    namespace = "chatfile"


@dataclass(frozen=True)
class Said:
    """One alternative of a message: its text and when it was written."""

    text: str
    at: datetime
    finished_at: datetime | None = None  # a generated reply's last word (SillyTavern's `gen_finished`)
    images: int = 0  # pictures attached to it; noted, not carried


@dataclass(frozen=True)
class ChatMessage:
    """One message with its alternatives; `chosen` is the one the story goes on from."""

    is_user: bool
    alternatives: tuple[Said, ...]
    chosen: int = 0
    name: str = ""  # the speaker's name as the file says it ("" = the chat's user or character)

    @property
    def said(self) -> Said:
        return self.alternatives[self.chosen]


@dataclass(frozen=True)
class Chat:
    user_name: str
    character_name: str
    created_at: datetime
    title: str = ""
    messages: tuple[ChatMessage, ...] = ()
    skipped_system: int = field(default=0, compare=False)  # system notes left out when read


# -- times ------------------------------------------------------------------------------------------
_HUMANIZED = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) ?@(\d{1,2})h ?(\d{1,2})m ?(\d{1,2})s(?: ?(\d{1,3})ms)?")
_MERIDIEM = re.compile(r"([A-Za-z]{3,})\.? (\d{1,2}),? (\d{4}),? (\d{1,2}):(\d{2})(?::(\d{2}))? ?([ap]m)", re.I)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def humanized(moment: datetime) -> str:
    """SillyTavern's message time, "2024-5-12 @14h 30m 12s 345ms", in UTC (how its reader takes it)."""
    m = as_utc(moment)
    return f"{m.year}-{m.month}-{m.day} @{m.hour:02d}h {m.minute:02d}m {m.second:02d}s {m.microsecond // 1000:02d}ms"


def humanized_short(moment: datetime) -> str:
    """SillyTavern's chat creation time, "2024-05-12@14h30m12s" (UTC)."""
    return f"{as_utc(moment):%Y-%m-%d@%Hh%Mm%Ss}"


def _iso(moment: datetime) -> str:
    """What `JSON.stringify(new Date())` writes: "2024-05-12T14:30:12.345Z"."""
    return f"{as_utc(moment):%Y-%m-%dT%H:%M:%S}.{as_utc(moment).microsecond // 1000:03d}Z"


def parse_send_date(value: Any, now: datetime) -> datetime:
    """A SillyTavern time in any form it has written (see the module note), or `now`."""
    try:
        if isinstance(value, bool) or value is None:
            return now
        if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
            return datetime.fromtimestamp(float(value) / 1000, UTC)  # SillyTavern's numbers are milliseconds
        if not isinstance(value, str):
            return now
        if match := _HUMANIZED.search(value):
            year, month, day, hour, minute, second, ms = match.groups()
            parts = (int(year), int(month), int(day), int(hour), int(minute), int(second))
            return datetime(*parts, int(ms or 0) * 1000, tzinfo=UTC)
        if match := _MERIDIEM.search(value):
            month_name, day, year, hour, minute, second, meridiem = match.groups()
            month = _MONTHS.index(month_name[:3].lower()) + 1
            hour24 = int(hour) % 12 + (12 if meridiem.lower() == "pm" else 0)
            return datetime(int(year), month, int(day), hour24, int(minute), int(second or 0), tzinfo=UTC)
        return as_utc(datetime.fromisoformat(value.strip()))
    except (ValueError, OverflowError, OSError):
        return now


# -- writing ----------------------------------------------------------------------------------------
def _extra(said: Said) -> dict[str, Any]:
    return {"refsheet_images": said.images} if said.images else {}


def _message_line(chat: Chat, message: ChatMessage) -> dict[str, Any]:
    said = message.said
    line: dict[str, Any] = {
        "name": message.name or (chat.user_name if message.is_user else chat.character_name),
        "is_user": message.is_user,
        "is_system": False,
        "send_date": humanized(said.at),
        "mes": said.text,
        "extra": _extra(said),
    }
    line |= _generation(said)
    if not message.is_user or len(message.alternatives) > 1:  # what SillyTavern writes after a reply
        line |= {
            "swipe_id": message.chosen,
            "swipes": [a.text for a in message.alternatives],
            "swipe_info": [
                {"send_date": humanized(a.at), **_generation(a), "extra": _extra(a)} for a in message.alternatives
            ],
        }
    return line


def _generation(said: Said) -> dict[str, str]:
    """When a generated reply started and finished (SillyTavern shows the time it took)."""
    if said.finished_at is None:
        return {}
    return {"gen_started": _iso(said.at), "gen_finished": _iso(said.finished_at)}


def to_jsonl(chat: Chat) -> bytes:
    """The chat as SillyTavern writes one: a header line, then one line per message (UTF-8, no BOM)."""
    header = {
        "user_name": chat.user_name,
        "character_name": chat.character_name,
        "create_date": humanized_short(chat.created_at),
        "chat_metadata": {META_KEY: {"title": chat.title}},
    }
    lines = [header, *(_message_line(chat, m) for m in chat.messages)]
    return "\n".join(dumps(line, compact=True) for line in lines).encode()


def _when(moment: datetime) -> str:
    return f"{as_utc(moment):%Y-%m-%d %H:%M} UTC"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def to_markdown(chat: Chat, lang: str = "en") -> str:
    """The chat to read anywhere: each message under its speaker and time, the chosen alternative in
    the text and the others folded away under it."""
    title = _one_line(chat.title) or t("chat.untitled", lang)
    user, character = _one_line(chat.user_name), _one_line(chat.character_name) or t("common.unnamed", lang)
    intro = t("chatfile.md.between", lang, user=user, character=character, date=_when(chat.created_at))
    out = [f"# {title}", "", intro, ""]
    for message in chat.messages:
        name = _one_line(message.name) or (user if message.is_user else character)
        out += ["---", "", f"### {name} · {_when(message.said.at)}", "", *_said_lines(message.said, lang)]
        others = [(i, a) for i, a in enumerate(message.alternatives) if i != message.chosen]
        if others:
            summary = t("chatfile.md.alternatives", lang, count=len(others))
            out += [f"<details><summary>{summary}</summary>", ""]
            for i, alternative in others:
                label = t("chatfile.md.alternative", lang, number=i + 1, total=len(message.alternatives))
                out += [f"#### {label} · {_when(alternative.at)}", "", *_said_lines(alternative, lang)]
            out += ["</details>", ""]
    return "\n".join(out)


def _said_lines(said: Said, lang: str) -> list[str]:
    images = [" ".join([t("chatfile.md.image", lang)] * said.images), ""] if said.images else []
    return [*images, said.text, ""]


def file_name(character_name: str, title: str, extension: str) -> str:
    """A download name that is safe on every system: "Seraphina - In the forest.jsonl"."""
    stem = " - ".join(p for p in (_one_line(character_name), _one_line(title)) if p) or "chat"
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", stem).strip(" .")[:120] or "chat"
    return f"{stem}.{extension}"


# -- reading ----------------------------------------------------------------------------------------
def read_jsonl(raw: bytes, name: str, now: datetime | None = None) -> Chat:
    """A SillyTavern chat file, or `ChatFileError` naming the file and line. System notes
    (`is_system`: SillyTavern keeps them out of the prompt) are left out and counted."""
    now = now or datetime.now(UTC)
    if len(raw) > MAX_CHAT_BYTES:
        raise ChatFileError("too_large", name=name, size_mb=f"{len(raw) / 2**20:.1f}", limit_mb=MAX_CHAT_BYTES >> 20)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ChatFileError("not_text", name=name) from None
    lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if len(lines) > MAX_MESSAGES + 1:
        raise ChatFileError("too_many", name=name, limit=MAX_MESSAGES)
    objects = [(n, _object(line, name, n)) for n, line in lines]
    if not objects or ("mes" not in objects[0][1] and not {"user_name", "character_name"} & set(objects[0][1])):
        raise ChatFileError("not_chat", name=name)
    header = {} if "mes" in objects[0][1] else objects.pop(0)[1]
    messages: list[ChatMessage] = []
    skipped = alternatives = 0
    for n, obj in objects:
        if obj.get("is_system"):
            skipped += 1
            continue
        message = _message(obj, name, n, now)
        alternatives += len(message.alternatives)
        if alternatives > MAX_ALTERNATIVES:
            raise ChatFileError("too_many", name=name, limit=MAX_ALTERNATIVES)
        messages.append(message)
    if not messages:
        raise ChatFileError("empty", name=name)
    meta = header.get("chat_metadata")
    ours = meta.get(META_KEY) if isinstance(meta, dict) else None
    title = ours.get("title") if isinstance(ours, dict) else None
    return Chat(
        user_name=_text(header.get("user_name")),
        character_name=_text(header.get("character_name")),
        created_at=parse_send_date(header.get("create_date"), messages[0].said.at),
        title=_text(title),
        messages=tuple(messages),
        skipped_system=skipped,
    )


def _text(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else ""


def _object(line: str, name: str, number: int) -> dict[str, Any]:
    try:
        value = loads(line)
    except ValueError:
        raise ChatFileError("not_json", name=name, line=number) from None
    if not isinstance(value, dict):
        raise ChatFileError("not_object", name=name, line=number)
    return value


def _message(obj: dict[str, Any], name: str, number: int, now: datetime) -> ChatMessage:
    mes = obj.get("mes")
    if not isinstance(mes, str):
        raise ChatFileError("not_message", name=name, line=number)
    at = parse_send_date(obj.get("send_date"), now)
    texts, chosen = [mes], 0
    swipes, swipe_id = obj.get("swipes"), obj.get("swipe_id")
    if isinstance(swipes, list) and swipes:
        flat = [s if isinstance(s, str) else s.get("message") if isinstance(s, dict) else None for s in swipes]
        if all(isinstance(s, str) for s in flat):  # (Chub's swipes are objects with a `message`)
            texts = flat
            chosen = swipe_id if isinstance(swipe_id, int) and 0 <= swipe_id < len(texts) else 0
            texts[chosen] = mes  # what SillyTavern shows is `mes`, even after an edit
    info = obj.get("swipe_info") if isinstance(obj.get("swipe_info"), list) else []
    said = []
    for i, text in enumerate(texts):
        entry = info[i] if i < len(info) and isinstance(info[i], dict) else {}
        when = at if i == chosen else parse_send_date(entry.get("send_date"), at)
        said.append(Said(clean_text(text), when))
    return ChatMessage(bool(obj.get("is_user")), tuple(said), chosen, _text(obj.get("name")))
