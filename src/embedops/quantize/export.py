"""Export the transformer of a SentenceTransformer to an ONNX graph with optimum's input/output names.

Written with `torch.onnx.export` (TorchScript tracing) because optimum's exporter fails to import with
the pinned torch; the graph keeps the names optimum uses (`input_ids`, `attention_mask`,
`token_type_ids` -> `last_hidden_state`), so sentence-transformers' own ONNX backend reads it too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Transformer

OPSET = 17  # LayerNormalization as one node; every maintained ONNX Runtime runs it
OUTPUT_NAME = "last_hidden_state"


def export_onnx(model: SentenceTransformer, path: Path) -> list[str]:
    """Write `model[0]`'s transformer to `path` (fp32, dynamic batch and length); return its input names."""
    import torch

    transformer = cast("Transformer", model[0])  # indexing a SentenceTransformer is typed as any Module
    tokenizer: Any = transformer.tokenizer
    auto_model: Any = transformer.auto_model
    input_names = [name for name in tokenizer.model_input_names if name != "position_ids"]
    sample = tokenizer(["a short text", "a slightly longer text to pad against"], padding=True, return_tensors="pt")
    inputs = tuple(sample[name] for name in input_names)

    class LastHiddenState(torch.nn.Module):
        """Positional inputs in, one tensor out: the shape the tracer needs."""

        def __init__(self) -> None:
            super().__init__()
            self.auto_model = auto_model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.auto_model(**dict(zip(input_names, tensors, strict=True)), return_dict=True)[OUTPUT_NAME]

    wrapper = LastHiddenState().to("cpu").eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in [*input_names, OUTPUT_NAME]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about python-side shape checks
        torch.onnx.export(
            wrapper,
            inputs,
            str(path),
            input_names=input_names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return input_names
