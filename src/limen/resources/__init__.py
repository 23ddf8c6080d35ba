"""Typed resources: kind, version, metadata, spec; YAML and JSON round trip."""

from limen.resources.base import Metadata, Resource, validate_name
from limen.resources.role import Role, RoleConditions, RoleOptions, RoleSpec, Rule
from limen.resources.token import JoinToken, UserToken
from limen.resources.user import User, UserSpec, UserStatus

__all__ = [
    "JoinToken",
    "Metadata",
    "Resource",
    "Role",
    "RoleConditions",
    "RoleOptions",
    "RoleSpec",
    "Rule",
    "User",
    "UserSpec",
    "UserStatus",
    "UserToken",
    "validate_name",
]
