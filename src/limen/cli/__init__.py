"""Thin command-line shells over client/ and service.py."""
