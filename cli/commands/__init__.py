"""Sub-commands of the `millivid` CLI; each module has `register(parser)` that sets `handler`."""
