"""Read-only fact gathering. Only facts/ and backends/ read the system."""
