"""Benchmarks: each module has `run(quick: bool) -> dict`, run by `millivid bench NAME --json`."""
