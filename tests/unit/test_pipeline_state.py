"""The pipeline's typed state without running a model: the one stage table, pipeline.json's format (written
in its historical key order, older files read back for reuse), and what the report and both command-line
summaries say when no gate was set or the evaluation set is small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipeline import STAGES as STAGE_KEYS  # pipeline.json's stage keys, in the order a run writes them

from embedops.cli import build_parser
from embedops.cli.demo import summary_lines as demo_summary
from embedops.cli.pipeline import summary_lines as pipeline_summary
from embedops.evaluate.gate import GateOutcome
from embedops.pipeline.config import PipelineConfig
from embedops.pipeline.ledger import Ledger, content_hash
from embedops.pipeline.recipe import choose_recipe
from embedops.pipeline.render import to_markdown
from embedops.pipeline.report import build, small_sample_warning
from embedops.pipeline.runner import PipelineResult
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


def test_small_sample_warning_says_what_one_query_is_worth() -> None:
    assert small_sample_warning({"queries": 24, "documents": 240}) == (
        "the evaluation has only 24 queries, so one query is worth 4.17 points of hit@1 (and up to as much of "
        "mrr@10 and ndcg@10): a difference of a few points may be one or two queries"
    )
    assert small_sample_warning({"queries": 99, "documents": 5}) is not None
    assert small_sample_warning({"queries": 100, "documents": 5}) is None
    assert small_sample_warning({"pairs": 10}) is None  # similarity data has no hit@1


def report_text(tmp_path: Path, state: PipelineState) -> str:
    return to_markdown(build(tmp_path, state))


def test_report_says_when_no_gate_was_set(tmp_path: Path) -> None:
    unchecked = report_text(tmp_path, finished_state())
    assert "**No gates set**: every stage finished, but nothing was required of the models" in unchecked
    assert "**Passed**" not in unchecked
    gated = finished_state(gates=[GateOutcome("ndcg@10>=+1", "fine-tuned", 1.5, True, "fine-tuned: ...")])
    assert "**Passed**: every stage finished; 1 gate check(s) held." in report_text(tmp_path, gated)
    limited = report_text(tmp_path, finished_state(max_forgetting=1.0, max_drift=0.02))
    assert "**Passed**: every stage finished within --max-forgetting 1 and --max-drift 0.02; no --gate" in limited
    gated.status, gated.failure = "failed", "gate ndcg@10>=+5 failed for fine-tuned"
    assert "**Stopped**: gate ndcg@10>=+5 failed" in report_text(tmp_path, gated)


def test_report_warns_about_a_small_evaluation_set(tmp_path: Path) -> None:
    assert "**Small evaluation set**: the evaluation has only 24 queries" in report_text(tmp_path, finished_state(24))
    assert "Small evaluation set" not in report_text(tmp_path, finished_state(400))


def test_pipeline_summary_lists_stages_gates_and_warnings(tmp_path: Path) -> None:
    state = finished_state()
    state.stages[Stage.FINETUNE].status = "reused"
    lines = pipeline_summary(PipelineResult(tmp_path, state, tmp_path / "report.html"))
    assert "finetune: reused" in lines and "data: ran in 1.0 s" in lines
    assert any(line.startswith("warning: the evaluation has only 24 queries") for line in lines)
    assert any(line.startswith("no gates set: nothing was required") for line in lines)

    outcome = GateOutcome("ndcg@10>=+2", "fine-tuned", 2.5, True, "fine-tuned: ndcg@10 +2.50 points vs base")
    gated = pipeline_summary(PipelineResult(tmp_path, finished_state(400, [outcome]), tmp_path / "report.html"))
    assert "gate ndcg@10>=+2: passed - fine-tuned: ndcg@10 +2.50 points vs base" in gated
    assert not any(line.startswith(("warning:", "no gates set")) for line in gated)


def test_demo_summary_warns_about_a_small_evaluation_set(tmp_path: Path) -> None:
    for name in ("finetuned", "quantized"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(b"0" * 1000)
    served = {"url": "http://127.0.0.1:1/embed", "dim": 32, "usage": {"tokens": 5}, "milliseconds": 3.0}
    screen = "\n".join(demo_summary(finished_state(24), tmp_path, served, 60.0))
    assert "hit@1    base 50.0 -> fine-tuned 50.0 -> int8 50.0" in screen
    assert "\ncaution   the evaluation has only 24 queries, so one query is worth 4.17" in screen
    assert "caution" not in "\n".join(demo_summary(finished_state(400), tmp_path, served, 60.0))


def test_the_command_line_builds_the_config_and_keeps_its_defaults(tmp_path: Path) -> None:
    data, output = tmp_path / "pairs.tsv", tmp_path / "run"
    data.write_text("a question\tits answer\n")
    argv = ["pipeline", "--data", str(data), "--output", str(output), "--gate", "ndcg@10>=+1", "--gate", "mrr@10>=0.5"]
    config = PipelineConfig.from_flags(vars(build_parser().parse_args([*argv, "--patience", "0", "--seed", "7"])))
    assert config == PipelineConfig(data, output, gates=["ndcg@10>=+1", "mrr@10>=0.5"], patience=0, seed=7)
    assert (config.eval_split, config.eval_fraction, config.quantize, config.use_lora) == ("test", 0.1, "int8", False)
    assert [gate.relative for gate in config.parsed_gates] == [True, False]
    plain = PipelineConfig.from_flags(vars(build_parser().parse_args(argv[:5])))
    assert plain == PipelineConfig(data, output) and plain.gates == []
