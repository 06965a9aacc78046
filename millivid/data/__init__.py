"""Video datasets: sharded Parquet storage, importers and clip loaders."""
