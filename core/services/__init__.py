"""The services pages call: each takes the database and the acting user, and reaches rows only
through `access`. They do not call each other for data: what two need lives in a shared helper."""
