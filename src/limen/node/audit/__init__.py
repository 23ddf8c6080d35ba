"""The node's side of the audit log: events delivered to the auth service or kept in a
spool on disk while it is away, and the session recordings kept and uploaded."""
