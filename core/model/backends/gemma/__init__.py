"""Gemma 3 inside the app, through transformers: loaded once per process on first use."""
