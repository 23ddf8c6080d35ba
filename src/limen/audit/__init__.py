"""Audit events, their codes, and where they are written."""
