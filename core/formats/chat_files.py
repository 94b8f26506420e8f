"""Chats as files: Markdown to read, and SillyTavern's chat JSONL to move a conversation there and back.

Pure format code (no database, no Streamlit): a `Chat` in, text out, and a file in, a `Chat` out.

SillyTavern keeps a chat as JSON Lines: a header `{user_name, character_name, create_date,
chat_metadata}`, then one object per message `{name, is_user, is_system, send_date, mes, extra}`; a
message with alternatives ("swipes") adds `swipes` (the texts), `swipe_id` (the shown one, whose text is
also `mes`) and `swipe_info` (per swipe: `send_date`, `gen_started`, `gen_finished`, `extra`). Our
alternatives of a turn are its swipes, the chosen one its `swipe_id`.

Kinds of lines (SillyTavern's `public/script.js`, `scripts/chats.js`, `scripts/slash-commands.js`):
- a *hidden* message is an ordinary user or character line with `is_system: true` (the eye button,
  `/hide`): SillyTavern keeps it out of the prompt; we keep it, hidden from the model;
- a *narrator* line (`/sys`) has `extra.type: "narrator"`, `is_system: false` and the narrator's name
  ("System" unless the chat names another);
- a *system note* (help, welcome, comments, "SillyTavern System" lines) is left out and counted;
- in a group chat each line names its speaker (`name`); we keep the name of every line, and which
  lines are the character's own is decided once, on import (`own_line`).
What a line says that we do not use (its `extra`, `send_date` as written, generation times, other
keys, each swipe's `swipe_info`) is *carried*: kept with the alternative it belongs to and written
back, so a chat read and written again is the same file.

Times: SillyTavern has written `send_date` in several forms over the years (epoch milliseconds,
"June 19, 2023 2:20pm", its "humanized" "2024-6-5 @14h 56m 50s 682ms"); its reader
(`public/scripts/utils.js` `parseTimestamp`) takes all three, reads the humanized form as UTC and the
"2:20pm" form (written in the writer's local time, a zone the file does not say) as the local time of
whoever views it. We do the same: the humanized form is UTC, a time written without a zone ("2:20pm",
ISO without an offset) is the importing viewer's local time (`zone`), so it shows as the file says
to them, as in SillyTavern. A time that cannot be read, or lies outside 1970–8999 (no chat's), is
"now". Whatever a time is read as, the file's own string is carried and written back unchanged. We
write the humanized form in UTC (to the millisecond, read by every version).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from core.base.errors import UserError
from core.base.i18n import t
from core.base.text import clean, clean_text, dumps, loads
from storage.tables import as_utc  # a time without a zone (SQLite's, or a file's) is UTC

MAX_CHAT_BYTES = 32 * 2**20  # long SillyTavern chats with many swipes are a few MB
MAX_MESSAGES = 20_000  # message lines in one file
MAX_ALTERNATIVES = 100_000  # swipes, all messages together
META_KEY = "refsheet"  # our own entry in `chat_metadata` (SillyTavern keeps keys it does not know)
NARRATOR = "narrator"  # SillyTavern's `extra.type` of a `/sys` line
NARRATOR_NAME = "System"  # SillyTavern's default narrator name (`NARRATOR_NAME_DEFAULT`)
SYSTEM_NAME = "SillyTavern System"  # its own notes (help, welcome…): `systemUserName`
WRITTEN = ("name", "is_user", "is_system", "mes", "swipes", "swipe_id", "swipe_info")  # made from our rows
PER_SWIPE = ("send_date", "gen_started", "gen_finished", "extra")  # what SillyTavern copies from a swipe
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)  # a chat's times


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
    # What the file said of it that we do not use: `info` (its `swipe_info` entry, or `no_info` where the
    # file gave it none) and, for the one the file showed, `line` (the line's other keys) and `shape`
    # (whether it had swipes and swipe_info, its `is_system` as written, swipe_info past the swipes).
    carried: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatMessage:
    """One message with its alternatives; `chosen` is the one the story goes on from."""

    is_user: bool
    alternatives: tuple[Said, ...]
    chosen: int = 0
    name: str = ""  # the speaker's name as the file says it ("" = the chat's user or character)
    hidden: bool = False  # kept out of the prompt (SillyTavern's `is_system` on an ordinary line)
    narrator: bool = False  # a `/sys` line: neither the user nor the character

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
    metadata: Mapping[str, Any] = field(default_factory=dict)  # SillyTavern's `chat_metadata` (author's note…)


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


def parse_send_date(value: Any, now: datetime, zone: tzinfo = UTC) -> datetime:
    """A SillyTavern time in any form it has written, one without a zone read in `zone` (see the module
    note), or `now`."""
    try:
        moment = _parsed(value, zone)
        return moment if moment is not None and EARLIEST <= moment < LATEST else now
    except (ValueError, OverflowError, OSError):
        return now


def _parsed(value: Any, zone: tzinfo) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        return datetime.fromtimestamp(float(value) / 1000, UTC)  # SillyTavern's numbers are milliseconds
    if not isinstance(value, str):
        return None
    if match := _HUMANIZED.search(value):
        year, month, day, hour, minute, second, ms = match.groups()
        parts = (int(year), int(month), int(day), int(hour), int(minute), int(second))
        return datetime(*parts, int(ms or 0) * 1000, tzinfo=UTC)
    if match := _MERIDIEM.search(value):
        month_name, day, year, hour, minute, second, meridiem = match.groups()
        month = _MONTHS.index(month_name[:3].lower()) + 1
        hour24 = int(hour) % 12 + (12 if meridiem.lower() == "pm" else 0)
        return as_utc(datetime(int(year), month, int(day), hour24, int(minute), int(second or 0), tzinfo=zone))
    moment = datetime.fromisoformat(value.strip())
    return as_utc(moment if moment.tzinfo is not None else moment.replace(tzinfo=zone))


# -- writing ----------------------------------------------------------------------------------------
def _extra(said: Said) -> dict[str, Any]:
    return {"refsheet_images": said.images} if said.images else {}


def _swipe_values(said: Said) -> dict[str, Any]:
    """What SillyTavern keeps per swipe (time, generation times, `extra`): as the file had it (the line
    for the swipe it showed, even a line with none of them, else its `swipe_info`), or made from our row."""
    source = said.carried["line"] if "line" in said.carried else said.carried.get("info")
    if isinstance(source, Mapping):
        values = {k: source[k] for k in PER_SWIPE if k in source}
        if said.images:
            values["extra"] = _with(values.get("extra"), _extra(said))
        return values
    return {"send_date": humanized(said.at), **_generation(said), "extra": _extra(said)}


def _with(extra: Any, more: Mapping[str, Any]) -> dict[str, Any]:
    """A line's `extra` with more in it; one that is not an object (a hand-made file's) gives way."""
    return {**(extra if isinstance(extra, Mapping) else {}), **more}


def _message_line(chat: Chat, message: ChatMessage) -> dict[str, Any]:
    said = message.said
    record = next((a.carried for a in message.alternatives if isinstance(a.carried.get("line"), Mapping)), {})
    other = {k: v for k, v in record.get("line", {}).items() if k not in PER_SWIPE and k not in WRITTEN}
    shape = record.get("shape") if isinstance(record.get("shape"), Mapping) else {}
    values = _swipe_values(said)
    default = NARRATOR_NAME if message.narrator else chat.user_name if message.is_user else chat.character_name
    line: dict[str, Any] = {
        "name": message.name or default,
        "is_user": message.is_user,
        **_is_system(message.hidden, shape.get("is_system")),
        **({"send_date": values.pop("send_date")} if "send_date" in values else {}),
        "mes": said.text,
        **values,
        **other,
    }
    if message.narrator:
        line["extra"] = _with(line.get("extra"), {"type": NARRATOR})
    swiped = shape.get("swipes", not (message.is_user or message.narrator)) or len(message.alternatives) > 1
    if swiped:  # what SillyTavern writes after a reply
        line |= {"swipe_id": message.chosen, "swipes": [a.text for a in message.alternatives]}
        infos = _swipe_infos(message.alternatives, shape)
        if infos or shape.get("swipe_info", "list") == "list":
            line["swipe_info"] = infos
        elif shape.get("swipe_info") == "empty":
            line["swipe_info"] = []
    return line


def _is_system(hidden: bool, written: Any) -> dict[str, Any]:
    """`is_system` as the file wrote it (`[value]`; `[]`: not at all) while it still says `hidden`:
    SillyTavern's narrator lines have `""`, not `false`. Else SillyTavern's own `true`/`false`."""
    if isinstance(written, list) and not written and not hidden:
        return {}
    if isinstance(written, list) and written and bool(written[0]) == hidden:
        return {"is_system": written[0]}
    return {"is_system": hidden}


def _swipe_infos(alternatives: tuple[Said, ...], shape: Mapping[str, Any]) -> list[Any]:
    """Each alternative's `swipe_info` entry, in order: as the file had it, or made from our row for one
    made here. None is made up for a swipe the file gave no entry (nor for any after it, so each entry
    stays beside its swipe); entries the file had past its last swipe follow, while nothing is missing."""
    infos = []
    for said in alternatives:
        if "info" in said.carried:
            infos.append(said.carried["info"])
        elif said.carried.get("no_info"):
            return infos
        else:
            infos.append(_swipe_info(said))
    more = shape.get("more_info")
    return infos + (list(more) if isinstance(more, list) else [])


def _swipe_info(said: Said) -> dict[str, Any]:
    return {"send_date": humanized(said.at), **_generation(said), "extra": _extra(said)}


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
        "chat_metadata": {**chat.metadata, META_KEY: {**_ours(chat.metadata), "title": chat.title}},
    }
    lines = [header, *(_message_line(chat, m) for m in chat.messages)]
    return "\n".join(dumps(line, compact=True) for line in lines).encode()


def _ours(metadata: Mapping[str, Any]) -> dict[str, Any]:
    ours = metadata.get(META_KEY)
    return dict(ours) if isinstance(ours, Mapping) else {}


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
        default = t("chatfile.md.narrator", lang) if message.narrator else user if message.is_user else character
        name = _one_line(message.name) or default
        heading = f"### {name} · {_when(message.said.at)}"
        heading += f" · *{t('chatfile.md.hidden', lang)}*" if message.hidden else ""
        out += ["---", "", heading, "", *_said_lines(message.said, lang)]
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
def read_jsonl(raw: bytes, name: str, now: datetime | None = None, zone: tzinfo = UTC) -> Chat:
    """A SillyTavern chat file, or `ChatFileError` naming the file and line. Hidden messages stay
    hidden, narrator lines are narrator lines, every line keeps its speaker's name and what it carries;
    SillyTavern's own system notes are left out and counted. A time written without a zone is read in
    `zone`, the importing viewer's (see the module note)."""
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
        if _system_note(obj):
            skipped += 1
            continue
        message = _message(obj, name, n, now, zone)
        alternatives += len(message.alternatives)
        if alternatives > MAX_ALTERNATIVES:
            raise ChatFileError("too_many", name=name, limit=MAX_ALTERNATIVES)
        messages.append(message)
    if not messages:
        raise ChatFileError("empty", name=name)
    meta = clean(header.get("chat_metadata")) if isinstance(header.get("chat_metadata"), dict) else {}
    title = _ours(meta).get("title")
    return Chat(
        user_name=_text(header.get("user_name")),
        character_name=_text(header.get("character_name")),
        created_at=parse_send_date(header.get("create_date"), messages[0].said.at, zone),
        title=_text(title),
        messages=tuple(messages),
        skipped_system=skipped,
        metadata=meta,
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


# SillyTavern's own notes (`system_message_types` other than the narrator's): never part of a story.
NOTE_TYPES = {"help", "welcome", "group", "empty", "generic", "comment", "slash_commands", "formatting", "hotkeys",
              "macros", "welcome_prompt", "assistant_note"}  # fmt: skip


def own_line(chat: Chat, message: ChatMessage, character_name: str) -> bool:
    """Whether a line is the character's own, to decide once, on import: a line on the character's side
    under the name the file gives its character (its header's, as SillyTavern's `saveChat` writes it),
    under the name of the character it is imported to, as `{{char}}` or under no name. Others keep
    their names: a group chat's other members, a `/sendas` line, a name from before a rename in
    SillyTavern (which may leave past lines under the old one)."""
    if message.is_user or message.narrator:
        return False
    return message.name in ("", "{{char}}", character_name, chat.character_name)


def _swipes(swipes: list[str], mes: str, swipe_id: Any) -> tuple[list[str], int]:
    """The alternatives and the chosen one. SillyTavern shows `mes`, the text of swipe `swipe_id` (even
    after an edit); where `swipe_id` is missing or not one of them, the swipe whose text is `mes` is
    chosen, and where none is, `mes` is one more alternative: no swipe is ever written over."""
    texts = list(swipes)
    if isinstance(swipe_id, int) and not isinstance(swipe_id, bool) and 0 <= swipe_id < len(texts):
        texts[swipe_id] = mes
        return texts, swipe_id
    if mes in texts:
        return texts, texts.index(mes)
    return [*texts, mes], len(texts)


def _kind(obj: dict[str, Any]) -> Any:
    extra = obj.get("extra")
    return extra.get("type") if isinstance(extra, dict) else None


def _system_note(obj: dict[str, Any]) -> bool:
    """A note SillyTavern wrote for the person (help, a comment…), not a hidden line of the story."""
    if not obj.get("is_system"):
        return False
    return obj.get("name") == SYSTEM_NAME or _kind(obj) in NOTE_TYPES


def _message(obj: dict[str, Any], name: str, number: int, now: datetime, zone: tzinfo = UTC) -> ChatMessage:
    mes = obj.get("mes")
    if not isinstance(mes, str):
        raise ChatFileError("not_message", name=name, line=number)
    at = parse_send_date(obj.get("send_date"), now, zone)
    texts, chosen = [mes], 0
    swipes = obj.get("swipes")
    if isinstance(swipes, list) and swipes:
        flat = [s if isinstance(s, str) else s.get("message") if isinstance(s, dict) else None for s in swipes]
        if all(isinstance(s, str) for s in flat):  # (Chub's swipes are objects with a `message`)
            texts, chosen = _swipes(flat, mes, obj.get("swipe_id"))
    info = obj.get("swipe_info") if isinstance(obj.get("swipe_info"), list) else []
    shape: dict[str, Any] = {
        "swipes": isinstance(swipes, list) and bool(swipes),
        "swipe_info": "list" if info else "empty" if isinstance(obj.get("swipe_info"), list) else "absent",
        "is_system": [clean(obj["is_system"])] if "is_system" in obj else [],  # as written: `""` is not `false`
    }
    if len(info) > len(texts):
        shape["more_info"] = clean(info[len(texts) :])
    line = clean({k: v for k, v in obj.items() if k not in WRITTEN})
    said = []
    for i, text in enumerate(texts):
        entry = info[i] if i < len(info) else None
        sent = entry.get("send_date") if isinstance(entry, dict) else None
        when = at if i == chosen else parse_send_date(sent, at, zone)
        carried: dict[str, Any] = {"info": clean(entry)} if i < len(info) else {"no_info": True}
        if i == chosen:
            carried |= {"line": line, "shape": shape}
        said.append(Said(clean_text(text), when, carried=carried))
    narrator = _kind(obj) == NARRATOR and not obj.get("is_user")
    return ChatMessage(
        bool(obj.get("is_user")), tuple(said), chosen, _text(obj.get("name")), bool(obj.get("is_system")), narrator
    )
