import streamlit as st

from core.resources import engine

engine()
st.title("Library")
st.write("Coming soon.")
