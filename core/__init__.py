"""Plain-Python core: settings, image intake, prompts, the Gemma 3 engine. No Streamlit here."""
