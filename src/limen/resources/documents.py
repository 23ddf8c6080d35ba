"""Resource documents written as YAML (roles, locks), checked before anything is saved.

``limen create -f``, ``limen edit`` and the web UI's pages take the same text and give
the same messages: each problem names the source, the field and its line, and one bad
document saves nothing.
"""

from __future__ import annotations

from typing import Any

from limen.errors import BadParameter
from limen.resources.connector import LDAPConnector, OIDCConnector
from limen.resources.lock import Lock
from limen.resources.role import Role
from limen.yamlload import load_documents, validate

MODELS = {"role": Role, "lock": Lock, "oidc": OIDCConnector, "ldap": LDAPConnector}


def validate_documents(text: str, source: str) -> list[dict[str, Any]]:
    """Every document checked before any is sent: one bad document saves nothing."""
    documents = []
    for data, located in load_documents(text, source):
        if not isinstance(data, dict):
            raise BadParameter(f"{source}: each document must be a mapping with kind, metadata")
        kind = str(data.get("kind", "")).lower()
        model = MODELS.get(kind)
        if model is None:
            raise BadParameter(
                f"{source}: field 'kind' (line {located.line_of(('kind',))}): "
                f"expected one of {', '.join(MODELS)}, got {data.get('kind')!r}"
            )
        resource = validate(model, data, located, source)
        document = resource.model_dump(mode="json", exclude_none=True)
        revision = (data.get("metadata") or {}).get("revision")
        if revision:
            document["metadata"]["revision"] = revision
        documents.append(document)
    if not documents:
        raise BadParameter(f"{source}: no resources found")
    return documents
