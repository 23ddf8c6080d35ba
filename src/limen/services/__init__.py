"""Typed stores over a Backend: the only way resources reach storage."""
