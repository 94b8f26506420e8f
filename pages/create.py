import streamlit as st

from core.resources import engine

engine()
st.title("Create")
st.write("Coming soon.")
