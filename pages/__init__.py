"""The app's pages, one file each, run by the router in Home.py (`ui.navigation`)."""
