"""File formats: Tavern cards (PNG, JSON, CHARX), SillyTavern chats, the backup file, zips from
strangers. Pure format code over the base; they never reach a database or a model."""
