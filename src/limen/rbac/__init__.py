"""Authorization: pure decisions from roles and traits, no I/O."""

from limen.rbac.checker import AccessChecker

__all__ = ["AccessChecker"]
