"""embedops: fine-tune, evaluate, quantize and serve sentence-embedding models."""

__version__ = "0.1.0"
