"""Models whose output is not what was recorded or promised: a width other than the manifest's, an edited
dim, a batch of the wrong shape while serving, and vectors that are not finite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faults_common import artifact_from, edit_manifest

from embedops.cli import main
from embedops.errors import ArtifactError, RequestError
from embedops.models import resolve


def dense_model(tiny_model_dir: Path, target: Path) -> Path:
    """The tiny model with a Dense(32 -> 8) projection after pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    modules = [*list(model)[:2], Dense(32, 8), list(model)[2]]
    SentenceTransformer(modules=modules, device="cpu").save(str(target))
    return target


def test_a_dense_models_width_is_measured_and_a_wrong_record_refused(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    from embedops.serve.engine import Engine

    plain = dense_model(tiny_model_dir, tmp_path / "dense")
    assert main(["info", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dim"] == 8
    assert Engine(resolve(plain), device="cpu").info.dim == 8

    unrecorded = artifact_from(plain, tmp_path / "unrecorded")
    assert Engine(resolve(unrecorded), device="cpu").info.dim == 8, "no recorded dim: the measured one is served"
    lying = artifact_from(plain, tmp_path / "lying", dim=32)
    with pytest.raises(ArtifactError, match="produces 8-dimensional vectors but its manifest records dim 32"):
        Engine(resolve(lying), device="cpu")


def test_an_edited_dim_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = artifact_from(tiny_model_dir, tmp_path / "model", dim=32)
    edit_manifest(model, dim=-5)
    with pytest.raises(ArtifactError, match="dim must be a positive integer"):
        resolve(model)
    edit_manifest(model, dim="384")
    with pytest.raises(ArtifactError, match="dim must be int or null, not str"):
        resolve(model)


def test_a_failing_delivery_answers_with_json_500_and_the_server_carries_on(tiny_model_dir: Path) -> None:
    """An engine whose output has the wrong width for one batch: that request gets a JSON 500 at once,
    the next one is answered, and the server stays ready."""
    import httpx
    from test_serve_app import run_server

    from embedops.serve.engine import Engine
    from embedops.serve.settings import ServeSettings

    class NarrowOnce(Engine):
        failures = 1

        def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
            output = super().embed(batch, **options)
            if NarrowOnce.failures and len(batch) == 3:
                NarrowOnce.failures -= 1
                return output[:, :5]
            return output

    servers = run_server(ServeSettings(), NarrowOnce(resolve(tiny_model_dir), device="cpu"))
    url = next(servers)
    try:
        failed = httpx.post(f"{url}/embed", json={"inputs": ["a", "b", "c"]}, timeout=10)
        assert failed.status_code == 500 and failed.headers["content-type"].startswith("application/json")
        assert "shape (3, 5)" in json.dumps(failed.json())
        again = httpx.post(f"{url}/embed", json={"inputs": ["a", "b", "c"]}, timeout=10)
        assert again.status_code == 200 and np.array(again.json()["embeddings"]).shape == (3, 32)
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        next(servers, None)


def test_delivery_that_raises_still_resolves_every_future(tiny_model_dir: Path) -> None:
    import asyncio

    from embedops.serve.batcher import Batcher, _Item, _Job

    async def deliver() -> BaseException | None:
        loop = asyncio.get_running_loop()
        job = _Job(loop.create_future(), np.empty((1, 32), np.float32), 1)
        Batcher._deliver([_Item(job, 0, [1], 0)], np.zeros((1, 7), np.float32))  # a row of the wrong width
        return job.future.exception()

    failure = asyncio.run(deliver())
    assert isinstance(failure, RequestError) and failure.http_status == 500


def test_a_model_without_finite_vectors_never_turns_ready(tiny_model_dir: Path) -> None:
    import httpx
    from test_serve_app import run_server

    from embedops.serve.engine import Engine
    from embedops.serve.settings import ServeSettings

    class NotANumber(Engine):
        def embed(self, batch: list[list[int]], **options: Any) -> np.ndarray:
            return np.full_like(super().embed(batch, **options), np.nan)

    servers = run_server(ServeSettings(), NotANumber(resolve(tiny_model_dir), device="cpu"))
    url = next(servers)
    try:
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503 and "non-finite" in response.json()["error"]
    finally:
        next(servers, None)
