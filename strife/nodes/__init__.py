"""Strife's node roles, each a process the launcher supervises: bank, gateway, client."""
