"""Adapter registry: validation, content-addressed store, catalogue, versions and aliases."""
