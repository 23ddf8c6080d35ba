"""Single sign-on: identity connectors that say who someone is, in place of a local
password.

- ``service``: the connectors that exist, the OIDC flow (start, callback, redeem) and the
  LDAP sign-in, each attempt audited; every success ends in ``LoginService.issue_for``,
  the path a local login takes, so nothing downstream knows how someone signed in;
- ``oidc`` and ``oidc_provider``: OpenID Connect (code flow, PKCE, state, nonce; the
  provider's discovery document and keys, cached; ID token checks);
- ``ldap``: an LDAP directory through ldap3 (service bind, search, user bind, groups);
- ``mapping``: claims and groups to roles and traits (pure);
- ``sso_users``: the user records of kind ``sso`` a connector's answer becomes;
- ``identity``, ``secrets``, ``tls``: the common result, secret sources, TLS contexts.
"""
