"""Evaluation: retrieval and similarity metrics for models and endpoints.

`evaluate(EvalConfig(...))` scores triples, BEIR directories or STS files with one or more models;
`report` presents the result and `check_gates` turns it into a pass/fail for CI.
"""

from embedops.evaluate.encoders import Encoder, ModelEncoder, open_encoder
from embedops.evaluate.runner import EvalConfig, EvalResult, ModelResult, check_gates, evaluate, record

__all__ = [
    "Encoder",
    "EvalConfig",
    "EvalResult",
    "ModelEncoder",
    "ModelResult",
    "check_gates",
    "evaluate",
    "open_encoder",
    "record",
]
