"""The pipeline's typed state without running a model: the one stage table, and pipeline.json's format
(written in its historical key order, older files read back for reuse)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedops.evaluate.gate import GateOutcome
from embedops.pipeline.ledger import Ledger, content_hash
from embedops.pipeline.recipe import choose_recipe
from embedops.pipeline.state import (
    BUILDS,
    EVALUATIONS,
    STAGES,
    ConfigRecord,
    Forgetting,
    PipelineState,
    Stage,
    StageRecord,
    stage_dir,
)

# pipeline.json's stage keys, in the order a full run writes them.
STAGE_KEYS = [
    "data",
    "eval-base",
    "general-base",
    "finetune",
    "eval-finetuned",
    "general-finetuned",
    "quantize",
    "eval-quantized",
]


DRIFT = {"drift": 0.01, "mean_cosine": 0.99, "p5_cosine": 0.98, "min_cosine": 0.9, "top10_overlap": 0.9, "samples": 9}


def config_record(**changes: object) -> ConfigRecord:
    record: ConfigRecord = {
        "data": "/data/pairs.tsv",
        "output": "/runs/x",
        "base_model": "/no/such/model",
        "eval_data": None,
        "eval_split": "test",
        "eval_fraction": 0.1,
        "validation_fraction": 0.1,
        "use_lora": False,
        "quantize": "int8",
        "gates": [],
        "max_drift": None,
        "max_forgetting": None,
        "time_budget": None,
        "seed": 42,
        "device": None,
    }
    return record | changes  # type: ignore[return-value]


def finished_state(queries: int = 24, gates: list[GateOutcome] | None = None, **config: object) -> PipelineState:
    """A passed run as a full pipeline records it, with `queries` held-out questions."""
    state = PipelineState(config_record(**config), status="passed", gates=gates or [])
    state.data = {
        "data": "/data/pairs.tsv",
        "sha256": "ab" * 32,
        "pairs": 240,
        "with_negative": 0,
        "anchor_chars": 40.0,
        "positive_chars": 120.0,
        "train_pairs": 192,
        "eval_pairs": queries,
        "validation_pairs": 24,
        "groups": 240,
        "eval_fraction": 0.1,
        "validation_fraction": 0.1,
        "heldout_documents": 240,
        "prep": {"rows": 240, "kept": 240, "removed": {}, "lengths": {}},
    }
    state.recipe = choose_recipe(192, use_lora=False)
    state.reproduce = "embedops pipeline --data /data/pairs.tsv --output /runs/x"
    scores = {"mrr@10": 0.6, "ndcg@10": 0.7, "hit@1": 0.5}
    results = {
        Stage.FINETUNE: {"steps": 10, "epochs_run": 2.0, "pairs": 192, "lr": 5e-5, "seconds": 3.0, "epochs": 30},
        Stage.QUANTIZE: {"method": "int8", "dtype": "int8", "file": "onnx/model.onnx", "drift": DRIFT},
    }
    for stage in Stage:
        result = results.get(stage, {"dataset": "heldout", "kind": "beir", "metrics": scores, "seconds": 1.0})
        if stage in EVALUATIONS:
            result = result | {"size": {"queries": queries, "documents": 240}}
        state.stages[stage] = StageRecord(stage, "ran", "0" * 64, {}, None, None, 1.0, result)
    state.forgetting = Forgetting(
        "bundled STS-B sample", "spearman", 0.8, 0.79, -1.0, config.get("max_forgetting"), True
    )  # type: ignore[arg-type]
    return state


def test_one_table_names_every_stage_in_run_order() -> None:
    assert [stage.value for stage in Stage] == STAGE_KEYS == list(STAGES)
    assert EVALUATIONS == (Stage.EVAL_BASE, Stage.EVAL_FINETUNED, Stage.EVAL_QUANTIZED)
    assert [STAGES[stage].label for stage in EVALUATIONS] == ["base", "fine-tuned", "quantized"]
    assert BUILDS == (Stage.FINETUNE, Stage.QUANTIZE)
    run = Path("/runs/x")
    assert [stage_dir(run, stage) for stage in (Stage.DATA, *BUILDS)] == [
        run / "data",
        run / "finetuned",
        run / "quantized",
    ]
    with pytest.raises(ValueError, match="writes no directory"):
        stage_dir(run, Stage.EVAL_BASE)
    # str-valued: the enum is written to pipeline.json, logged and formatted as the bare name
    assert json.dumps({Stage.EVAL_BASE: Stage.EVAL_BASE}) == '{"eval-base": "eval-base"}'
    assert f"{Stage.GENERAL_FINETUNED}: reused" == "general-finetuned: reused"


def test_pipeline_json_keeps_its_key_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, config_record())
    ledger.run_stage(Stage.DATA, {"seed": 1}, lambda: {"pairs": 3})
    written = json.loads((tmp_path / "pipeline.json").read_text())
    assert list(written) == [
        "format",
        "embedops",
        "status",
        "failure",
        "started",
        "config",
        "stages",
        "gates",
        "updated",
    ]
    assert list(written["stages"]["data"]) == [
        "name", "status", "input_hash", "inputs", "output", "output_hash", "seconds", "result", "finished",
    ]  # fmt: skip
    assert written["stages"]["data"]["name"] == "data" and written["stages"]["data"]["result"] == {"pairs": 3}

    state = finished_state(gates=[GateOutcome("ndcg@10>=+1", "fine-tuned", 1.5, True, "fine-tuned: ...")])
    state.updated = "now"
    document = json.loads(json.dumps(state.to_json()))
    assert list(document) == [
        "format", "embedops", "status", "failure", "started", "config", "stages", "gates", "updated", "data",
        "recipe", "commands", "forgetting",
    ]  # fmt: skip
    assert list(document["stages"]) == STAGE_KEYS and document["commands"] == {"reproduce": state.reproduce}
    assert list(document["gates"][0]) == ["gate", "model", "value", "passed", "detail"]
    assert list(document["forgetting"]) == [
        "data", "metric", "base", "finetuned", "change_points", "max_forgetting", "passed",
    ]  # fmt: skip
    assert document["recipe"]["why"] == state.recipe.why  # type: ignore[union-attr]


def test_an_older_pipeline_json_is_reused(tmp_path: Path) -> None:
    inputs = {"model": "m", "eval_data": "e", "split": "test"}
    older = {  # as written before the general-domain stages existed, plus records no run can reuse
        "format": 1,
        "embedops": "0.1.0",
        "status": "passed",
        "stages": {
            "eval-base": {
                "name": "eval-base",
                "status": "ran",
                "input_hash": content_hash(inputs),
                "inputs": inputs,
                "output": None,
                "output_hash": None,
                "seconds": 2.5,
                "result": {"metrics": {"ndcg@10": 0.5}},
                "finished": "2025-01-01T00:00:00Z",
            },
            "eval-finetuned": {"name": "eval-finetuned", "input_hash": content_hash(inputs)},  # no result
            "eval-general": {"input_hash": content_hash(inputs), "result": {}},  # a stage that no longer exists
        },
    }
    (tmp_path / "pipeline.json").write_text(json.dumps(older))
    ledger = Ledger(tmp_path, config_record())
    assert list(ledger.previous) == [Stage.EVAL_BASE]

    def must_not_run() -> dict:
        raise AssertionError("an unchanged stage ran again")

    record = ledger.run_stage(Stage.EVAL_BASE, inputs, must_not_run)
    assert record.status == "reused" and record.result == {"metrics": {"ndcg@10": 0.5}}
    assert ledger.run_stage(Stage.EVAL_FINETUNED, inputs, lambda: {"metrics": {}}).status == "ran"
    assert ledger.run_stage(Stage.EVAL_BASE, {**inputs, "split": "dev"}, lambda: {"metrics": {}}).status == "ran"
