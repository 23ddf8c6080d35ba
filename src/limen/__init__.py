"""Limen: an identity-aware access gateway for SSH infrastructure."""

__version__ = "0.1.0"
