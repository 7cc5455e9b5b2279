"""Payments fixtures live in tests/conftest.py, shared with reconciliation."""
