"""The built-in procedural first-person block world (the embedded default data source)."""
