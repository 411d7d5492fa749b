"""Read evaluation data into one of two task shapes: retrieval (BEIR dirs, triples) or similarity (STS).

Like the training readers, no torch here and every problem is reported as `PATH:LINE: message`.
A file's layout is detected from its first line, so `--data` takes any of them without a flag.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedops.data.readers import PairReader, decoded_lines
from embedops.errors import ConfigError, DataError

TASKS = ("auto", "triples", "beir", "sts")
# SICK's SemEval_set values by the split names the other datasets use.
_SICK_SPLITS = {"train": "TRAIN", "dev": "TRIAL", "trial": "TRIAL", "validation": "TRIAL", "test": "TEST"}
_SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score", "SemEval_set")
_STSB_FIELDS = 7  # genre, file, year, id, score, sentence 1, sentence 2 (some rows carry extra fields)


@dataclass
class RetrievalTask:
    """Queries ranked against documents; `relevant[q]` are the document indices relevant to query q.

    For triples, `triplets` holds each query's (positive, negative) document indices, for triplet accuracy.
    """

    name: str
    kind: str
    queries: list[str]
    documents: list[str]
    relevant: list[np.ndarray]
    triplets: np.ndarray | None = None


@dataclass
class SimilarityTask:
    """Sentence pairs with a gold similarity score (STS-B, SICK)."""

    name: str
    first: list[str]
    second: list[str]
    gold: np.ndarray
    kind: str = field(default="sts")


Task = RetrievalTask | SimilarityTask


def load_task(
    path: str | Path,
    *,
    task: str = "auto",
    split: str = "test",
    max_queries: int | None = None,
    seed: int = 0,
) -> Task:
    """Read `path` as the given task kind (or detect it) and optionally sample `max_queries` of it."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, 0, "no such file or directory")
    kind = detect_task(path) if task == "auto" else task
    if kind not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if kind == "beir":
        loaded: Task = load_beir(path, split)
    elif path.is_dir():
        raise DataError(path, 0, f"is a directory; a {kind} evaluation reads a file")
    elif kind == "sts":
        loaded = load_sts(path, split)
    else:
        loaded = load_triples(path)
    return sample(loaded, max_queries, seed) if max_queries else loaded


def detect_task(path: Path) -> str:
    """BEIR for a directory; STS for the SICK or STS-B layouts; otherwise pairs/triples."""
    if path.is_dir():
        return "beir"
    cells = _first_line(path).split("\t")
    if all(column in cells for column in _SICK_COLUMNS[:3]):
        return "sts"
    if len(cells) >= _STSB_FIELDS and _is_float(cells[4]):
        return "sts"
    return "triples"


def _first_line(path: Path) -> str:
    return next(decoded_lines(path), (0, ""))[1]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sample(task: Task, max_queries: int, seed: int) -> Task:
    """A fixed-seed sample of the queries (retrieval) or pairs (similarity); documents stay whole."""
    if max_queries < 1:
        raise ConfigError("--max-queries must be at least 1")
    size = len(task.queries) if isinstance(task, RetrievalTask) else len(task.gold)
    if max_queries >= size:
        return task
    keep = np.sort(np.random.default_rng(seed).choice(size, max_queries, replace=False))
    name = f"{task.name}-q{max_queries}"
    if isinstance(task, SimilarityTask):
        return SimilarityTask(name, [task.first[i] for i in keep], [task.second[i] for i in keep], task.gold[keep])
    triplets = task.triplets[keep] if task.triplets is not None else None
    queries = [task.queries[i] for i in keep]
    return RetrievalTask(name, task.kind, queries, task.documents, [task.relevant[i] for i in keep], triplets)


def cap_documents(task: RetrievalTask, max_documents: int, seed: int) -> RetrievalTask:
    """The task over at most `max_documents` documents: every relevant one plus a fixed-seed sample of the
    rest as distractors. Scoring after every epoch encodes the whole corpus; a capped corpus keeps that
    cheap (climate-fever dev: 5,240 passages, about 90 s per pass on 2 cores) while ranking the same
    queries against the same kind of near-misses."""
    if len(task.documents) <= max_documents or task.triplets is not None:
        return task
    needed = np.unique(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in task.relevant]))
    others = np.setdiff1d(np.arange(len(task.documents)), needed)
    room = max(0, max_documents - len(needed))
    picked = np.random.default_rng(seed).choice(others, min(room, len(others)), replace=False)
    keep = np.sort(np.concatenate([needed, picked]))
    new_index = {int(old): new for new, old in enumerate(keep)}
    relevant = [np.array([new_index[int(i)] for i in ids], dtype=np.int64) for ids in task.relevant]
    documents = [task.documents[i] for i in keep]
    return RetrievalTask(f"{task.name}-d{len(keep)}", task.kind, task.queries, documents, relevant)


# -- triples ---------------------------------------------------------------------------------------


def load_triples(path: Path) -> RetrievalTask:
    """Pairs or triplets, read like training data; each anchor's positive is its one relevant document.

    Documents are the distinct positive and negative texts, so a text repeated across lines is one
    document, not a tie with itself.
    """
    index: dict[str, int] = {}
    anchors: list[str] = []
    pairs: list[tuple[int, int]] = []
    for example in PairReader(path):
        positive = index.setdefault(example.positive, len(index))
        negative = index.setdefault(example.negative, len(index)) if example.negative is not None else -1
        anchors.append(example.anchor)
        pairs.append((positive, negative))
    ids = np.array(pairs)
    triplets = ids if (ids[:, 1] >= 0).all() else None
    relevant = [np.array([positive]) for positive, _ in pairs]
    return RetrievalTask(path.stem, "triples", anchors, list(index), relevant, triplets)


# -- BEIR --------------------------------------------------------------------------------------------


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(path, 0, "no such file; a BEIR directory holds corpus.jsonl, queries.jsonl, qrels/")
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(record, dict) or "_id" not in record:
            raise DataError(path, number, 'expected a JSON object with "_id" and "text"')
        yield number, record


def read_beir_texts(path: Path) -> dict[str, str]:
    """id -> text, with a title prepended as BEIR evaluations do."""
    texts: dict[str, str] = {}
    for number, record in _jsonl_records(path):
        text = " ".join(str(record.get(key) or "") for key in ("title", "text")).strip()
        if not text:
            raise DataError(path, number, f"record {record['_id']!r} has no text")
        texts[str(record["_id"])] = text
    if not texts:
        raise DataError(path, 1, "file is empty")
    return texts


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str]) -> dict[str, list[str]]:
    """query id -> relevant corpus ids (score > 0); every id must exist in queries/corpus."""
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise DataError(path, 0, f"no qrels for this split; splits found: {', '.join(found) or 'none'}")
    qrels: dict[str, list[str]] = {}
    for number, line in decoded_lines(path):
        cells = line.split("\t")
        if not line.strip() or (number == 1 and cells[0] == "query-id"):
            continue
        if len(cells) != 3:
            raise DataError(path, number, f"found {len(cells)} column(s); expected query-id, corpus-id, score")
        query_id, corpus_id, score = cells
        if query_id not in queries:
            raise DataError(path, number, f"query id {query_id!r} is not in queries.jsonl")
        if corpus_id not in corpus:
            raise DataError(path, number, f"corpus id {corpus_id!r} is not in corpus.jsonl")
        if not _is_float(score):
            raise DataError(path, number, f"score {score!r} is not a number")
        if float(score) > 0:
            qrels.setdefault(query_id, []).append(corpus_id)
    if not qrels:
        raise DataError(path, 1, "no relevant (score > 0) query-document pairs in this split")
    return qrels


def load_beir(directory: Path, split: str) -> RetrievalTask:
    """Queries of `split` that have a relevant document, ranked against the whole corpus."""
    corpus = read_beir_texts(directory / "corpus.jsonl")
    queries = read_beir_texts(directory / "queries.jsonl")
    qrels = _read_qrels(directory / "qrels" / f"{split}.tsv", queries, corpus)
    position = {doc_id: i for i, doc_id in enumerate(corpus)}
    query_ids = [q for q in queries if q in qrels]
    relevant = [np.array(sorted({position[d] for d in qrels[q]})) for q in query_ids]
    name = f"{directory.resolve().name}-{split}"
    return RetrievalTask(name, "beir", [queries[q] for q in query_ids], list(corpus.values()), relevant)


# -- STS ---------------------------------------------------------------------------------------------


def load_sts(path: Path, split: str) -> SimilarityTask:
    """SICK (header with sentence_A/B, relatedness_score) or STS-B (7 tab-separated fields, no quoting)."""
    header = _first_line(path).split("\t")
    if any(column in header for column in _SICK_COLUMNS[:3]):
        return _load_sick(path, header, split)
    return _load_stsb(path)


def _load_stsb(path: Path) -> SimilarityTask:
    first: list[str] = []
    second: list[str] = []
    gold: list[float] = []
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        cells = line.split("\t")[:_STSB_FIELDS]
        if len(cells) < _STSB_FIELDS or not _is_float(cells[4]):
            raise DataError(path, number, "expected the STS-B layout: 7 tab-separated fields, score in the 5th")
        gold.append(float(cells[4]))
        first.append(cells[5])
        second.append(cells[6])
    return _similarity_task(path, path.stem, first, second, gold)


def _load_sick(path: Path, header: list[str], split: str) -> SimilarityTask:
    missing = [name for name in _SICK_COLUMNS[:3] if name not in header]
    if missing:
        raise DataError(path, 1, f"the SICK header has no {', '.join(missing)} column")
    a, b, score = (header.index(name) for name in _SICK_COLUMNS[:3])
    split_column = header.index(_SICK_COLUMNS[3]) if _SICK_COLUMNS[3] in header else None
    wanted = _SICK_SPLITS.get(split.lower(), split.upper())
    first: list[str] = []
    second: list[str] = []
    gold: list[float] = []
    for number, line in decoded_lines(path):
        if number == 1 or not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(header):
            raise DataError(path, number, f"found {len(cells)} fields; the header names {len(header)}")
        if split_column is not None and cells[split_column] != wanted:
            continue
        if not _is_float(cells[score]):
            raise DataError(path, number, f"relatedness_score {cells[score]!r} is not a number")
        first.append(cells[a])
        second.append(cells[b])
        gold.append(float(cells[score]))
    name = f"{path.stem.lower()}-{split.lower()}"
    return _similarity_task(path, name, first, second, gold, split=wanted)


def _similarity_task(
    path: Path, name: str, first: list[str], second: list[str], gold: list[float], split: str | None = None
) -> SimilarityTask:
    if not gold:
        where = f" for split {split}" if split else ""
        raise DataError(path, 1, f"no sentence pairs{where}")
    if len(set(gold)) == 1:
        raise DataError(path, 1, "every gold score is the same; a correlation with it is undefined")
    return SimilarityTask(name, first, second, np.array(gold))
