"""Serving: an HTTP embedding server (seed /embed, OpenAI /v1/embeddings, TEI) over one model artifact."""
