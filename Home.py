"""RefSheet Chat: chat with a character, played by Gemma 3 from its reference sheet.

This file is the router. The pages (Home, Create, Library, Chat) are listed in
`ui.navigation.navigation()` and live in `pages/`; they call the services in `core/`.
"""

import streamlit as st

from core.base.errors import UserError
from ui import resources
from ui.language import say
from ui.navigation import navigation

if resources.settings().preload:
    resources.backend()  # REFSHEET_PRELOAD: the model starts loading at the first page view, whichever page

try:
    navigation().run()
except UserError as problem:  # one a page did not catch (a full disk, say): said plainly, never a traceback
    st.error(say(problem), icon=":material/error:")
