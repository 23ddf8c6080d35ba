"""The node as a member of a cluster: joining and its identity on disk, heartbeats and
renewals, the link to the auth service (in-process or over HTTPS), the cluster policy and
observer, and the node role inside `limen start`."""
