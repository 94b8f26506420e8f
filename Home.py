"""RefSheet Chat: chat with a character, played by Gemma 3 from its reference sheet.

`streamlit run Home.py` reads this file twice over. Imported (as the module `Home`), it is the server,
`app`: the database migrated at start-up, a `/ready` check for load balancers, and an error id
instead of a traceback (`ui.server`). Run for each page view (as `__main__`), it is the router,
`ui.navigation.route()`: the pages (Home, Create, Library, Chat) live in `pages/` and call the
services in `core/`.
"""

import streamlit as st

if __name__ == "__main__":
    from ui.navigation import route

    route()
else:
    from ui.server import lifespan, on_script_error, routes

    app = st.App("Home.py", lifespan=lifespan, routes=routes(), on_script_error=on_script_error)
