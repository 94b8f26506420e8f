"""RefSheet Chat: chat with a character, played by Gemma 3 from its reference sheet.

This file is the router. The pages (Home, Create, Library, Chat) are listed in
`ui.navigation.navigation()` and live in `pages/`; they call the services in `core/`.
"""

from ui.navigation import navigation

navigation().run()
