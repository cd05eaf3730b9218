"""Remote runs over Fabric: connect and wait, push, set up and start, stream, collect.

Per-host logic is a plain function of a connection: a fabric `Connection` for an SSH host, or an
invoke `Context` (which Connection subclasses) for `--local`, so one pipeline serves both.
`ernie.run` fans these functions out over the inventory's hosts.
"""
