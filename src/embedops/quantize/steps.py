"""What a quantization shows while it runs, and what it keeps quiet.

An int8 run takes about a minute on a small encoder (loading, export, calibration, the drift check), so
each stage is announced as it starts, numbered (`quantize [3/6] calibrating ...`, logged at INFO; the CLI
shows it on stderr), and the stages that loop over texts draw a bar on a terminal. ONNX Runtime and its
quantizer log a line per graph node and warnings about the opset upgrades they make themselves;
`library_logs` keeps them to errors unless asked to be verbose.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from embedops.quantize.config import QuantizeConfig

logger = logging.getLogger(__name__)
_ORT_WARNING, _ORT_ERROR = 2, 3  # ONNX Runtime's log severities; warning is its default


class Steps:
    """Numbered announcements of the stages of one run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    @classmethod
    def planned(cls, config: QuantizeConfig) -> Steps:
        """Load, write, drift check, output ranges; ONNX adds its export, rowwise int8 its calibration."""
        onnx = config.resolved_backend == "onnx"
        calibrated = onnx and config.dtype == "int8" and config.int8_scheme == "rowwise"
        return cls(4 + onnx + calibrated)

    def start(self, message: str) -> None:
        self.done += 1
        logger.info("quantize [%d/%d] %s", self.done, self.total, message)


@contextmanager
def library_logs(verbose: bool) -> Iterator[None]:
    """ONNX Runtime's logging for the length of one run: errors only, or with `verbose` everything from
    its Python side (a line per quantized node) on stderr and its runtime's warnings."""
    import onnxruntime

    python_side = logging.getLogger("onnxruntime")
    level, propagate = python_side.level, python_side.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    if verbose:
        python_side.setLevel(logging.INFO)
        python_side.addHandler(handler)
        python_side.propagate = False  # shown once, whatever the root logger has
    else:
        python_side.setLevel(logging.ERROR)
        onnxruntime.set_default_logger_severity(_ORT_ERROR)
    try:
        yield
    finally:
        python_side.setLevel(level)
        python_side.removeHandler(handler)
        python_side.propagate = propagate
        onnxruntime.set_default_logger_severity(_ORT_WARNING)  # it has no getter; this is its default
