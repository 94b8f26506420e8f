"""RefSheet Chat: chat with a character, played by Gemma 3 from its reference sheet.

This file is the router. The pages (Home, Create, Library, Chat) are listed in
`core.streamlit_ui.navigation()` and live in `pages/`.
"""

from core.streamlit_ui import navigation

navigation().run()
