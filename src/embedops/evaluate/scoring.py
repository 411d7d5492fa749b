"""Score one task with one encoder: which metrics a task reports, and computing them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from embedops.errors import ConfigError
from embedops.evaluate.datasets import SimilarityTask, Task
from embedops.evaluate.encoders import Encoder, embed
from embedops.evaluate.metrics import RANK_FAMILIES, parse_rank_metric, ranking_metrics, relevant_positions

SIMILARITY_METRICS = ("spearman", "pearson")
# The metrics each task reports unless asked otherwise; hit@k cut-offs come from `--k`.
_DEFAULT_KS = {"triples": (1, 5, 10), "beir": (1, 10)}
_FIXED = {"triples": ("mrr@10", "ndcg@10"), "beir": ("ndcg@10", "mrr@10", "recall@100", "map@100")}


def default_metrics(task: Task, ks: Sequence[int] | None = None) -> list[str]:
    """The task's standard metric set, main metric first."""
    if isinstance(task, SimilarityTask):
        return list(SIMILARITY_METRICS)
    accuracy = ["accuracy"] if task.triplets is not None else []
    hits = [f"hit@{k}" for k in (ks or _DEFAULT_KS[task.kind])]
    return [*_FIXED[task.kind], *hits, *accuracy]


def check_metrics(task: Task, names: Iterable[str]) -> None:
    """Refuse, before any encoding, a metric this task cannot produce (e.g. a gate on a typo)."""
    for name in names:
        if isinstance(task, SimilarityTask):
            ok = name in SIMILARITY_METRICS
            expected = ", ".join(SIMILARITY_METRICS)
        else:
            ok = parse_rank_metric(name) is not None or (name == "accuracy" and task.triplets is not None)
            expected = f"{'|'.join(RANK_FAMILIES)}@K" + (", accuracy" if task.triplets is not None else "")
        if not ok:
            raise ConfigError(f"metric {name!r} is not available for a {task.kind} evaluation; expected {expected}")


def score(task: Task, encoder: Encoder, *, metrics: Sequence[str], batch_size: int) -> dict[str, float]:
    """Encode what the task needs once, then compute every requested metric from those vectors."""
    if isinstance(task, SimilarityTask):
        return _score_similarity(task, encoder, batch_size)
    queries = embed(encoder, task.queries, batch_size=batch_size, label=f"{encoder.name}: queries")
    documents = embed(encoder, task.documents, batch_size=batch_size, label=f"{encoder.name}: documents")
    ranked = [name for name in metrics if name != "accuracy"]
    results = ranking_metrics(relevant_positions(queries, documents, task.relevant), ranked)
    if "accuracy" in metrics and task.triplets is not None:
        positive = (queries * documents[task.triplets[:, 0]]).sum(axis=1)
        negative = (queries * documents[task.triplets[:, 1]]).sum(axis=1)
        results["accuracy"] = float((positive > negative).mean())
    return {name: results[name] for name in metrics}


def _score_similarity(task: SimilarityTask, encoder: Encoder, batch_size: int) -> dict[str, float]:
    """Spearman and Pearson of cosine similarity against the gold scores (as MTEB reports STS)."""
    from scipy.stats import pearsonr, spearmanr

    sentences = list(dict.fromkeys([*task.first, *task.second]))
    index = {text: i for i, text in enumerate(sentences)}
    vectors = embed(encoder, sentences, batch_size=batch_size, label=f"{encoder.name}: sentences")
    first = vectors[[index[text] for text in task.first]]
    second = vectors[[index[text] for text in task.second]]
    cosine = (first * second).sum(axis=1)
    return {
        "spearman": float(spearmanr(task.gold, cosine).statistic),
        "pearson": float(pearsonr(task.gold, cosine).statistic),
    }
