import streamlit as st

from core.resources import engine

engine()
st.title("Home")
st.write("Coming soon.")
