"""traindoc's Streamlit dashboard. Entry script: app/main.py (started by `traindoc serve`)."""
