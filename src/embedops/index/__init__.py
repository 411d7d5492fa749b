"""`embedops index`: load an `embed` output into PostgreSQL + pgvector, verify it, and swap it live."""
