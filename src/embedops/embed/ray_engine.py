"""The embedding job on Ray Data, for a corpus that outgrows one machine.

Shards are the rows of a Ray dataset; `map_batches` runs them on a fixed pool of actors, each holding
one model copy (and `num_gpus` GPUs), which read their shard from the input and return its vectors
to the driver; the driver writes the shards as they arrive, so the output, the manifest and resuming
are exactly the local engine's. Every node must see the input and the model at the same path (a
shared filesystem, as Ray Data's own readers need) and is refused if its copy of the model differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedops.embed.job import EmbedConfig, RunStats, Vectors, read_shard
from embedops.errors import ArtifactError, EmbedopsError, MissingDependencyError

logger = logging.getLogger("embedops.embed")
# Longest wait for a pool's actors to start (each loads the model) before the job fails.
ACTOR_START_SECONDS = 600


def _ray() -> Any:
    try:
        import ray
        import ray.data  # sets up its loggers on import; embed_on_ray quiets them after
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return ray


class ShardActor:
    """One model copy on a Ray worker: shard descriptors in, ids and finished vectors out."""

    def __init__(self, config: dict[str, Any], fingerprint: str) -> None:
        from embedops.embed.encoder import PassageEncoder
        from embedops.embed.manifest import model_fingerprint
        from embedops.models import resolve
        from embedops.serve.engine import Engine
        from embedops.serve.lanes import batch_job_lanes

        ray = _ray()
        settings = EmbedConfig(**config)
        self.node = ray.get_runtime_context().get_node_id()
        ref = resolve(settings.model)
        if model_fingerprint(ref) != fingerprint:
            raise ArtifactError(f"node {self.node}: its copy of {settings.model} differs from the driver's")
        self.source = settings.source()
        device = settings.device or ("cuda" if settings.num_gpus else None)
        engine = Engine(ref, device=device, lanes=batch_job_lanes(settings.cpus_per_actor))
        self.encoder = PassageEncoder(engine, settings.encode_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results: dict[str, list[Any]] = {key: [] for key in ("index", "ids", "vectors", "dim", "truncated", "node")}
        for index, start, rows in zip(batch["index"], batch["start"], batch["rows"], strict=True):
            block = read_shard(self.source, int(start), int(rows))
            before = self.encoder.truncated
            vectors = self.encoder.encode([passage.text for passage in block])
            results["index"].append(int(index))
            results["ids"].append(json.dumps([passage.id for passage in block]))
            results["vectors"].append(vectors.astype(np.float32).tobytes())
            results["dim"].append(vectors.shape[1])
            results["truncated"].append(self.encoder.truncated - before)
            results["node"].append(self.node)
        return {key: np.array(values, dtype=object) for key, values in results.items()}


def embed_on_ray(
    config: EmbedConfig,
    fingerprint: str,
    shards: list[tuple[int, int, int]],
    progress: Callable[[int], object],
    stats: RunStats,
) -> Vectors:
    """Vectors of `shards` (index, first line, rows), in the order they finish.

    With int8 storage shard 0 runs alone first: its vectors set the ranges every shard is stored with.
    """
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=config.ray_address,
            logging_level=logging.WARNING,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
    # One progress bar (the caller's) and no per-dataset log lines.
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Work starts once every actor of the pool is up, not as soon as the first is: actors load the model
    # at different speeds, and on a loaded 2-node test cluster the first one took all 7 shards of a
    # group before the second was ready. Bounded, so a cluster that cannot place them fails in one line.
    context.wait_for_min_actors_s = ACTOR_START_SECONDS
    # Workers run elsewhere (another directory, another machine): every path they open is absolute.
    model = Path(config.model)
    shipped = replace(
        config,
        input=str(Path(config.input).absolute()),
        model=str(model.absolute()) if model.exists() else config.model,
    )
    alive = [node for node in ray.nodes() if node.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrency = config.concurrency or max(1, cpus // config.cpus_per_actor)
    logger.info(
        "Ray cluster: %d node(s), %d CPU(s); %d actor(s) of %d CPU(s), one model copy each",
        len(alive),
        cpus,
        concurrency,
        config.cpus_per_actor,
    )
    first = [shard for shard in shards if shard[0] == 0] if config.dtype == "int8" else []
    groups = [group for group in (first, [shard for shard in shards if shard not in first]) if group]
    try:
        for group in groups:
            dataset = ray.data.from_items(
                [{"index": index, "start": start, "rows": rows} for index, start, rows in group],
                override_num_blocks=len(group),
            )
            results = dataset.map_batches(
                ShardActor,
                fn_constructor_kwargs={"config": asdict(shipped), "fingerprint": fingerprint},
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(concurrency, len(group))),
                num_cpus=config.cpus_per_actor,
                num_gpus=config.num_gpus or None,
            )
            for row in _rows(results, ray):
                ids = json.loads(row["ids"])
                vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(ids), int(row["dim"]))
                stats.truncated += int(row["truncated"])
                stats.nodes.add(str(row["node"]))
                progress(len(ids))
                yield int(row["index"]), ids, vectors
    finally:
        if started_here:
            ray.shutdown()


def _rows(dataset: Any, ray: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows; a worker's failure becomes one line naming its cause, not Ray's traceback."""
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise EmbedopsError(f"a Ray worker failed: {lines[-1] if lines else type(exc).__name__}") from exc
