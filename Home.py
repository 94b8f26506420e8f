"""RefSheet Chat: chat with a character, played by Gemma 3 from its reference sheet.

This file is the router; each page lives in `pages/`.
"""

import streamlit as st

st.set_page_config(page_title="RefSheet Chat", page_icon=":material/palette:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/create.py", title="Create", icon=":material/add_photo_alternate:"),
    st.Page("pages/library.py", title="Library", icon=":material/photo_library:"),
    st.Page("pages/chat.py", title="Chat", icon=":material/forum:"),
]
st.navigation(pages).run()
