"""`embedops pipeline`: data -> fine-tune -> evaluate -> quantize -> evaluate -> report, as one
reproducible run under a directory, with quality gates and reuse of stages whose inputs did not change."""

from embedops.pipeline.config import PipelineConfig
from embedops.pipeline.runner import PipelineResult, run_pipeline

__all__ = ["PipelineConfig", "PipelineResult", "run_pipeline"]
