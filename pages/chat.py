import streamlit as st

from core.resources import engine

engine()
st.title("Chat")
st.write("Coming soon.")
