"""Everything that knows about Streamlit, apart from the pages: resources, widgets, the UI language."""
