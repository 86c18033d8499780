"""Code generated from protos/ at build time (setup.py); never edited by hand."""
