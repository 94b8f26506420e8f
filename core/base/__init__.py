"""The base: settings, translated errors and strings, text and image intake, the profile's one
definition, reply settings. Imports nothing above it (only `storage`)."""
