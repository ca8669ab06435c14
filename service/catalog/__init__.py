"""The knowledge in data/: loading and validation, sync into the database, and the query layer."""
