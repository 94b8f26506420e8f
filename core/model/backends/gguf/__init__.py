"""Gemma 3 inside the app through llama.cpp (llama-cpp-python): a GGUF and its vision projector (mmproj).

No torch, no transformers: `model` loads the files, `prompt` turns chat messages into positions (token
ids, a picture's positions keyed by its sha256), `session` runs them through llama.cpp with prefix
reuse and a native sampler, `states` keeps KV snapshots (in memory, and character prefixes on disk),
`engine` serves replies one at a time, `backend` is the `Backend`.
"""
