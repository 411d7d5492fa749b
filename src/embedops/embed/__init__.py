"""Re-embed a corpus with a model into sharded Parquet, resumably (`embedops embed`)."""
