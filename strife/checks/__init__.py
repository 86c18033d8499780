"""Checks of a running deployment: the audit (`verify`), `torture` and `bench`."""
