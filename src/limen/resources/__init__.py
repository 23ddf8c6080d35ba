"""Typed resources: kind, version, metadata, spec; YAML and JSON round trip."""

from limen.resources.base import Metadata, Resource, validate_name
from limen.resources.connector import AnyConnector, Connector, LDAPConnector, OIDCConnector
from limen.resources.instance import Instance, InstanceSpec
from limen.resources.lock import Lock, LockSpec, LockTarget
from limen.resources.node import Node, NodePresence, NodePresenceSpec, NodeSpec
from limen.resources.role import Role, RoleConditions, RoleOptions, RoleSpec, Rule
from limen.resources.session import Session, SessionSpec
from limen.resources.sso_request import SSORequest
from limen.resources.token import JoinToken, UserToken
from limen.resources.user import SSOLink, User, UserSpec, UserStatus

__all__ = [
    "Instance",
    "InstanceSpec",
    "AnyConnector",
    "Connector",
    "LDAPConnector",
    "OIDCConnector",
    "SSOLink",
    "SSORequest",
    "JoinToken",
    "Lock",
    "LockSpec",
    "LockTarget",
    "Metadata",
    "Node",
    "NodePresence",
    "NodePresenceSpec",
    "NodeSpec",
    "Resource",
    "Role",
    "RoleConditions",
    "RoleOptions",
    "RoleSpec",
    "Rule",
    "Session",
    "SessionSpec",
    "User",
    "UserSpec",
    "UserStatus",
    "UserToken",
    "validate_name",
]
