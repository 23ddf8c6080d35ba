"""Running people's programs on the node: local accounts, the environment, the executor
(PTYs, process groups), non-blocking fd streams and the input queue, agent sockets."""
