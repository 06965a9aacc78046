"""Prefect flows (package `millivid_flows`): thin compositions of the platform's stages."""
