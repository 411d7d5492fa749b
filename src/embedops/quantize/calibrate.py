"""Per-channel activation ranges of an fp32 ONNX graph on calibration texts, for int8 smoothing.

The default texts are the bundled general-domain sentences (image captions and SNLI sentences from
STS-B dev, resources/general_sts.tsv): short and varied, and separate from the built-in sentences the
drift check measures on. `--calibration-data` takes a pairs file instead, for a model whose domain
looks nothing like them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from embedops.quantize.drift import sample_texts

if TYPE_CHECKING:
    import numpy as np
    import onnx

CALIBRATION_TEXTS = 512
# Every MatMul input of the graph is kept for each batch: for a 24-layer, 1024-wide encoder, 8 texts of
# 256 tokens hold about 1.4 GB of them at once; 32 such texts would hold four times that.
CALIBRATION_BATCH = 8
CALIBRATION_TOKENS = 256
Tokenize = Callable[[list[str]], dict[str, "np.ndarray"]]


def calibration_texts(data: str | Path | None, limit: int = CALIBRATION_TEXTS, seed: int = 0) -> list[str]:
    """Distinct texts of a pairs file (sampled as the drift check samples it), or of the bundled
    general-domain sentences; at most `limit`."""
    if data is not None:
        return sample_texts(data, limit, seed)[0]
    table = resources.files("embedops").joinpath("resources/general_sts.tsv").read_text(encoding="utf-8")
    seen = dict.fromkeys(sentence for line in table.splitlines() for sentence in line.split("\t")[5:7])
    texts = [text for text in seen if text.strip()]
    return random.Random(seed).sample(texts, limit) if len(texts) > limit else texts


def channel_maxima(
    model: onnx.ModelProto, names: list[str], tokenize: Tokenize, texts: list[str], batch_size: int = CALIBRATION_BATCH
) -> dict[str, np.ndarray]:
    """The largest magnitude of each channel (last axis) of the tensors `names` over the texts' real tokens."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from tqdm.auto import tqdm

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}
    maxima: dict[str, np.ndarray] = {}
    with tqdm(total=len(texts), desc="quantize: calibrating", unit=" texts", disable=None, leave=False) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            feed = tokenize(batch)
            real = feed["attention_mask"].astype(bool)
            outputs = session.run(names, {name: value for name, value in feed.items() if name in wanted})
            for name, output in zip(names, outputs, strict=True):
                batch_max = np.abs(output[real]).max(axis=0)
                maxima[name] = np.maximum(maxima[name], batch_max) if name in maxima else batch_max
            bar.update(len(batch))
    return maxima
