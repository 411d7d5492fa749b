"""numpy pooling gives what sentence-transformers' Pooling and Normalize modules give, for every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers.models import Normalize, Pooling

from embedops.serve.onnx_forward import OnnxForward

MODES = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


class _Session:
    """An ONNX Runtime session's interface over fixed token embeddings, to compare pooling alone."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens

    def get_inputs(self) -> list[object]:
        return [type("Input", (), {"name": name})() for name in ("input_ids", "attention_mask")]

    def run(self, _: None, feed: dict[str, np.ndarray], run_options: object = None) -> list[np.ndarray]:
        assert feed["input_ids"].shape == self.tokens.shape[:2]
        return [self.tokens]


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("modes", [[m] for m in MODES] + [["cls", "mean"], ["mean", "max", "lasttoken"]])
def test_numpy_pooling_matches_sentence_transformers(modes: list[str], left: bool, normalize: bool) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(4, 7, 16)).astype(np.float32)
    lengths = [7, 3, 1, 5]
    mask = np.zeros((4, 7), dtype=np.int64)
    for row, length in enumerate(lengths):
        mask[row, slice(7 - length, 7) if left else slice(0, length)] = 1
    pooling = Pooling(16, **{_flag(m): m in modes for m in MODES})
    head = torch.nn.Identity()
    head.auto_model = type("Model", (), {"session": _Session(tokens)})()
    forward = OnnxForward.from_model([head, pooling, Normalize()] if normalize else [head, pooling])
    assert forward is not None
    ours = forward(np.ones_like(mask), mask)
    features = {"token_embeddings": torch.from_numpy(tokens.copy()), "attention_mask": torch.from_numpy(mask)}
    features = pooling(features)
    theirs = (Normalize()(features) if normalize else features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_chains_with_other_modules_stay_with_sentence_transformers() -> None:
    head = torch.nn.Identity()
    head.auto_model = type("Model", (), {"session": _Session(np.zeros((1, 1, 4), np.float32))})()
    dense = type("Dense", (torch.nn.Module,), {})()
    assert OnnxForward.from_model([head, Pooling(4, "mean"), dense]) is None
    assert OnnxForward.from_model([head, Pooling(4, "mean"), Normalize(), dense]) is None
    assert OnnxForward.from_model([torch.nn.Identity(), Pooling(4, "mean")]) is None
    assert OnnxForward.from_model([head, Pooling(4, "mean")]) is not None


def _flag(mode: str) -> str:
    return {
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
        "mean": "pooling_mode_mean_tokens",
        "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
        "weightedmean": "pooling_mode_weightedmean_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }[mode]
