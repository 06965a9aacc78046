"""The `millivid` command line: the top layer (cli -> flows, dashboards, bench -> platform -> science); nothing imports it."""
