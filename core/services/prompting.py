"""What the model is asked about a character and a conversation: shared by the services that ask.

Characters (a warm-up), conversations (checking a reply length against the context) and turns (a
reply) each need the character prefix and the reply settings; they get them here, not from one
another, so no service calls another for data.

Macros stay macros: a greeting or an imported chat is stored as written, `{{user}}` and `{{char}}`
included, and `names` fills them when it is shown and when it is prompted, so a persona set later
reads in every old conversation too.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from core.base.lore import Lorebook
from core.base.profile import profile_of
from core.base.sampling import InvalidSampler, SamplerSettings
from core.base.sheets import Picture
from core.model.prompts import CharacterPrompt, character_prompt, fill_placeholders
from core.services.access import Actor
from storage import characters as chars
from storage.tables import Character, Conversation


def character_prefix(session: Session, character: Character, actor: Actor) -> CharacterPrompt:
    """The character as the model meets it: instruction, every reference image (main sheet first), lore,
    and who it talks to (the actor's persona: {{user}} in its card). The caller has checked access."""
    sheets = [Picture.of(stored) for stored in chars.sheets(session, character.id)]
    persona = actor.persona.description
    book = Lorebook.from_card(character.character_book)
    return character_prompt(profile_of(character), sheets, book, actor.user_name, persona)


def names(character: Character, actor: Actor) -> Callable[[str], str]:
    """Fills `{{char}}` and `{{user}}` (and their spellings) with the character's name and the
    actor's: what a stored text reads as, to them and to the model."""
    name, user = character.name or "you", actor.user_name
    return lambda text: fill_placeholders(text, name, user)


def reply_settings(conversation: Conversation) -> SamplerSettings:
    """The conversation's saved reply settings (defaults if none, or if they no longer validate)."""
    try:
        return SamplerSettings.from_dict(conversation.settings)
    except InvalidSampler:
        return SamplerSettings()
