"""Characters: what pages call to list, create, edit, copy, delete, import and export them.

Every function takes the database engine and the acting user, opens one unit of work (so a
failure stores nothing) and reaches rows only through `core.services.access`. Images arrive already
validated (`core.base.sheets.check_uploads`); profiles are checked against the one profile definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.base.errors import Refused
from core.base.i18n import Text
from core.base.lore import Lorebook
from core.base.profile import BY_NAME, FIELDS, Profile
from core.base.sheets import ImageLimits, ImageRejected, Picture, PreparedImage, prepare_image
from core.base.text import clean, one_line
from core.formats.cards import (
    MAX_CARD_BYTES,
    changed_here,
    export_warnings,
    import_card,
    kept_files,
    png_card_size,
    read_card,
    write_card_png,
)
from core.formats.charx import IMAGE_EXTENSIONS, is_charx, read_charx, write_charx
from core.model.backend import Backend
from core.model.prompts import CharacterPrompt
from core.services import access
from core.services.access import Actor
from core.services.prompting import character_prefix
from storage import characters as chars
from storage.images import Stored, image_sizes
from storage.tables import Character, SheetImage


def summaries(
    db: Engine, actor: Actor, query: str = "", *, limit: int | None = None, offset: int = 0
) -> list[chars.CharacterSummary]:
    """Library cards the actor may list (their own, the shared ones; all for an admin, to moderate),
    most recent activity first, filtered by name and notes; `limit`/`offset` give one page (no full
    images). Counts and activity are of the actor's own conversations."""
    listed, theirs, seen = (
        access.characters_listed(actor),
        access.conversations_seen(actor),
        access.characters_seen(actor),
    )
    with Session(db) as session:  # an admin's search reads the names of what they only list, not the notes
        return chars.list_characters(session, query, listed, theirs, limit, offset, notes_of=seen)


def count(db: Engine, actor: Actor, query: str = "") -> int:
    """How many characters the actor may list (that match `query`): the library's page count."""
    with Session(db) as session:
        return chars.count_characters(session, access.characters_listed(actor), query, access.characters_seen(actor))


def names(db: Engine, actor: Actor) -> dict[int, str]:
    """Every character the actor sees, id to name, most recent activity first: a picker's options
    (an admin's too: listing others' private characters is for deleting them, not chatting)."""
    with Session(db) as session:
        return chars.character_names(session, access.characters_seen(actor), access.conversations_seen(actor))


def get(db: Engine, actor: Actor, character_id: int | None) -> Character:
    with Session(db) as session:
        return access.character(session, actor, character_id)


def create(db: Engine, actor: Actor, profile: Mapping[str, Any], images: Sequence[PreparedImage]) -> Character:
    """A new character from its profile and images (the first is the main sheet), stored whole or not at all."""
    if not images:
        raise Refused("no_main_sheet")
    values = _checked({**Profile().model_dump(), **profile})
    with access.writing(db) as session:
        return chars.create_character(session, images, owner_id=actor.id, **values)


def update(db: Engine, actor: Actor, character_id: int, changes: Mapping[str, Any]) -> Character:
    """Change profile fields; the rest stay as they are. An imported card's modification date no longer
    holds once the character is changed here (`cards.changed_here`): an export says when it was."""
    with access.writing(db) as session:
        current = access.character(session, actor, character_id, write=True)
        values = _checked({**Profile.model_validate(current, from_attributes=True).model_dump(), **changes})
        changed = {k: values[k] for k in changes}
        if (extensions := changed_here(values["extensions"])) != values["extensions"]:
            changed["extensions"] = extensions
        return chars.update_character(session, character_id, **changed)


def duplicate(db: Engine, actor: Actor, character_id: int, name_suffix: str = " (copy)") -> Character:
    """A copy with the same profile and images and no conversations, the actor's own (and private)."""
    with access.writing(db) as session:
        access.character(session, actor, character_id)
        return chars.duplicate_character(session, character_id, name_suffix, owner_id=actor.id)


def delete(db: Engine, actor: Actor, character_id: int) -> None:
    """Delete the character with its images and every conversation with it (its owner, or an admin)."""
    with access.writing(db) as session:
        access.character(session, actor, character_id, delete=True)
        chars.delete_character(session, character_id)


def share(db: Engine, actor: Actor, character_id: int, shared: bool) -> None:
    """Let the team see the character, chat with it (in conversations of their own) and copy it; or stop."""
    with access.writing(db) as session:
        access.character(session, actor, character_id, write=True)
        chars.set_shared(session, character_id, shared)


# -- reference images ----------------------------------------------------------------------------
def images(db: Engine, actor: Actor, character_id: int) -> list[SheetImage]:
    """The character's images as thumbnails (no full blobs), main sheet first."""
    with Session(db) as session:
        access.character(session, actor, character_id)
        return chars.get_images(session, character_id)


def main_sheet(db: Engine, actor: Actor, character_id: int) -> Stored[SheetImage]:
    """The main sheet's row (thumbnail, names) with its full picture, for showing it."""
    with Session(db) as session:
        access.character(session, actor, character_id)
        sheet = chars.get_main_image(session, character_id)
        if sheet is None:
            raise Refused("no_main_sheet")
        return sheet


def prompt_images(db: Engine, actor: Actor, character_id: int) -> list[Picture]:
    """Every reference image as the model sees it (main sheet first): for reading the sheet again."""
    with Session(db) as session:
        access.character(session, actor, character_id)
        return [Picture.of(picture) for picture in chars.sheets(session, character_id)]


def add_images(db: Engine, actor: Actor, character_id: int, new: Sequence[PreparedImage]) -> None:
    with access.writing(db) as session:
        access.character(session, actor, character_id, write=True)
        chars.add_images(session, character_id, new)


def remove_image(db: Engine, actor: Actor, character_id: int, image_id: int) -> None:
    """Remove one image; the next becomes the main sheet if the main one goes. The last one stays."""
    with access.writing(db) as session:
        access.sheet(session, actor, character_id, image_id, write=True)
        if len(chars.get_images(session, character_id)) == 1:
            raise Refused("last_image")
        chars.remove_image(session, image_id)


def set_main_image(db: Engine, actor: Actor, character_id: int, image_id: int) -> None:
    with access.writing(db) as session:
        access.sheet(session, actor, character_id, image_id, write=True)
        chars.set_main_image(session, character_id, image_id)


def warm_up(db: Engine, actor: Actor, backend: Backend, character_id: int) -> None:
    """After a character is made or changed: let a loaded model read its sheets now, in the
    background, so the first reply starts warm. The backend decides whether and when; the prefix
    (every sheet read) is built only if it will."""
    with Session(db) as session:
        access.character(session, actor, character_id)

    def prefix() -> CharacterPrompt:
        with Session(db) as session:
            return character_prefix(session, access.character(session, actor, character_id), actor)

    backend.warm(f"character:{character_id}", prefix)


def lore(character: Character) -> Lorebook:
    """The character book's usable entries, for showing what the character may draw on."""
    return Lorebook.from_card(character.character_book)


# -- Tavern cards --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardDraft:
    """A card read from a file, not stored yet: its profile fills a form, its picture can be the sheet,
    its extra pictures (every other reference image it carries, in order) follow it."""

    profile: dict[str, Any]
    picture: PreparedImage | None = field(default=None, repr=False)
    picture_error: ImageRejected | None = None
    warnings: tuple[Text, ...] = ()  # fields changed or left out, by name; pictures that could not be read
    extra_pictures: tuple[PreparedImage, ...] = field(default=(), repr=False)


def read_card_file(raw: bytes, name: str, limits: ImageLimits | None = None) -> CardDraft:
    """Parse a card (PNG, JSON or CHARX); raises `CardError` (or `ArchiveError` for an unsafe zip).
    Every picture is validated like any upload: a bad main picture is `picture_error`, a bad extra one
    a warning."""
    card = read_charx(raw, name) if is_charx(raw, name) else read_card(raw, name)
    imported = import_card(card)
    profile, warnings = imported.profile, list(imported.warnings)
    extras: list[PreparedImage] = []
    for extra in imported.pictures:
        try:
            extras.append(prepare_image(extra.data, extra.name, limits))
        except ImageRejected as exc:
            warnings.append(exc.text)
    draft = CardDraft(profile, warnings=tuple(warnings), extra_pictures=tuple(extras))
    if imported.main is None:
        return draft
    main_name = name if card.image is not None else f"{name.rsplit('.', 1)[0] or 'card'}.png"
    try:
        return replace(draft, picture=prepare_image(imported.main, main_name, limits))
    except ImageRejected as exc:
        return replace(draft, picture_error=exc)


@dataclass(frozen=True)
class OtherPicture:
    """A picture another app's card brought (an emotion, a background…): not a reference image, so the
    model never reads it, but kept with the character and written back in every export. `label` is
    its name and type ("smile · emotion")."""

    name: str
    type: str
    label: str
    picture: PreparedImage | None = field(default=None, repr=False)  # with its thumbnail
    error: ImageRejected | None = None  # not a picture we can show (it is kept all the same)


def other_pictures(character: Character | Mapping[str, Any], limits: ImageLimits | None = None) -> list[OtherPicture]:
    """The pictures a character (or a card's profile, before it is stored) keeps for other apps, in
    order, each labelled with its name and type, to show beside its reference images (checked like any
    upload; one that is not a picture is listed with why)."""
    if isinstance(character, Mapping):
        character = SimpleNamespace(extensions=character.get("extensions") or {})
    found = []
    for kept in kept_files(character):
        if kept.ext.lower() not in IMAGE_EXTENSIONS:
            continue  # a script, a sound…: kept, not shown
        label = " · ".join(part for part in (kept.name, kept.type) if part)
        try:
            picture, error = prepare_image(kept.data, f"{kept.name or 'image'}.{kept.ext}", limits), None
        except ImageRejected as exc:
            picture, error = None, exc
        found.append(OtherPicture(kept.name, kept.type, label, picture, error))
    return found


def export_notes(character: Character) -> list[Text]:
    """What an export of the character leaves out, named (files another app's card named but did not
    hold): to say beside the export buttons."""
    return export_warnings(character)


def _card_sheets(session: Session, actor: Actor, character_id: int) -> tuple[Character, list[tuple[str, bytes]]]:
    """The character and every reference image `(original name, PNG)`, main sheet first."""
    character = access.character(session, actor, character_id)
    sheets = chars.sheets(session, character_id)
    if not sheets or sheets[0].row.position != 0:
        raise Refused("no_main_sheet")
    return character, [(row.original_name, data) for row, data in sheets]


def export_card(db: Engine, actor: Actor, character_id: int) -> bytes:
    """The character as a card PNG readable by SillyTavern: V2 and V3 data on the main sheet, every
    other reference image in the V3 assets. Raises `CardError` when that would pass what card readers
    take (`png_card_fits` says so beforehand): CHARX carries any number of images."""
    with Session(db) as session:
        character, sheets = _card_sheets(session, actor, character_id)
        (_, main), extras = sheets[0], sheets[1:]
        return write_card_png(character, main, extras)


def png_card_fits(db: Engine, actor: Actor, character_id: int) -> bool:
    """Whether the PNG card stays within what card readers take, measured from the images' stored
    sizes (no picture is read)."""
    with Session(db) as session:
        character = access.character(session, actor, character_id)
        rows = chars.get_images(session, character_id)
        sizes = image_sizes(session, SheetImage, [row.id for row in rows if row.position != 0])
        return png_card_size(character, list(sizes.values())) <= MAX_CARD_BYTES


def export_charx(db: Engine, actor: Actor, character_id: int) -> bytes:
    """The character as a CHARX (the V3 zip): `card.json` and every reference image as a file, in order."""
    with Session(db) as session:
        character, sheets = _card_sheets(session, actor, character_id)
        return write_charx(character, sheets)


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """The values validated against the profile definition (a bad one is refused by name), their text
    made safe for every database (no NUL characters, no lone surrogates, no NaN), and one-line fields
    (name, language, creator, version, each tag) kept to one line."""
    try:
        checked = clean(Profile.model_validate(values).model_dump())
        lines = {f.name for f in FIELDS if f.kind in ("line", "language")}
        return {k: one_line(v) if k in lines else [one_line(t) for t in v] if k == "tags" else v
                for k, v in checked.items()}  # fmt: skip
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        name = name if name in BY_NAME else "?"
        if error["type"] == "string_too_long":
            raise Refused("too_long", field=name, limit=error["ctx"]["max_length"]) from exc
        raise Refused("bad_field", field=name) from exc
