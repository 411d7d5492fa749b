"""`embedops pipeline`: fine-tune, evaluate, quantize and evaluate again under one directory, with gates
and a report; re-running with unchanged inputs reuses the finished stages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from embedops.cli._processes import add_process_flags, launch_if_asked
from embedops.configs import help_with_defaults

if TYPE_CHECKING:
    from embedops.pipeline import PipelineResult

ORDER = 40


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="one reproducible run: hold-out split, fine-tune, evaluate, quantize, gates and a report",
        description="Run data -> finetune -> eval -> quantize -> eval under --output and write report.md/.html. "
        "Stages whose inputs are unchanged since the last run are reused. Exit 1 when a gate fails.",
        formatter_class=help_with_defaults("embedops.pipeline.config:PipelineConfig"),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="training pairs/triplets: .tsv, .csv or .jsonl")
    data.add_argument(
        "--eval-data",
        metavar="BEIR_DIR|TRIPLES",
        help="evaluation data (default: hold out --eval-fraction of --data, no text on both sides)",
    )
    data.add_argument("--eval-split", help="split of a BEIR directory")
    data.add_argument("--eval-fraction", type=float, help="share held out without --eval-data")
    data.add_argument(
        "--validation-fraction",
        type=float,
        help="share of the pairs that picks the best epoch (not used when --eval-data has a dev split)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--base-model", help="model reference")
    model.add_argument("--output", required=True, help="run directory: artifacts, pipeline.json, report")
    model.add_argument("--use-lora", action="store_true", help="train a LoRA adapter instead of all weights")
    model.add_argument(
        "--quantize",
        choices=("int8", "int4", "none"),
        help="int8 or int4: an ONNX model for CPUs; none: stop at the fine-tuned model",
    )
    train = parser.add_argument_group(
        "training recipe (when not given: length and learning rate by validation, the rest from the data)"
    )
    train.add_argument("--epochs", type=int, help="most epochs (default: a ceiling of 30)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="learning rate (default: probed on the validation data)")
    train.add_argument("--mine-negatives", type=int, metavar="N", help="hard negatives mined per pair (0: none)")
    train.add_argument(
        "--patience", type=int, help="stop after this many epochs without a better validation score (0: off)"
    )
    train.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="cap the whole run (45m, 2h, 1h30m): training stops in time and the best model so far is published",
    )
    train.add_argument("--seed", type=int, help="split, data order and initialisation")
    train.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    gates = parser.add_argument_group("quality gates")
    gates.add_argument(
        "--gate",
        action="append",
        dest="gates",
        metavar="EXPR",
        help="e.g. 'ndcg@10>=+0.5' (signed: points over the base model) or 'ndcg@10>=0.6' (absolute); repeatable",
    )
    gates.add_argument("--max-drift", type=float, metavar="D", help="refuse a quantized model whose 1 - cosine > D")
    gates.add_argument(
        "--max-forgetting",
        type=float,
        metavar="POINTS",
        help="refuse a fine-tuned model that loses more than POINTS of general-domain Spearman (x100, bundled STS set)",
    )
    add_process_flags(parser)
    serving = parser.add_argument_group("serving")
    serving.add_argument("--serve", action="store_true", help="serve the final model when every gate passed")
    serving.add_argument("--port", type=int, default=8000, help="port for --serve")
    parser.set_defaults(run=run, parser=parser)


def summary_lines(result: PipelineResult) -> list[str]:
    """What the run ends with on stdout: the scores side by side, what one query is worth when the evaluation
    is small, each stage and gate (the progress lines on stderr say the same as they happen), the reports."""
    from embedops.evaluate import EvalResult, ModelResult
    from embedops.evaluate.report import format_table
    from embedops.pipeline.report import NOT_CHECKED, checked, small_sample_warning
    from embedops.pipeline.state import STAGES

    state, directory = result.state, result.directory
    scored = state.scored()
    first = scored[0][1]
    models = [ModelResult(STAGES[stage].label, record["metrics"], record["seconds"]) for stage, record in scored]
    lines = [
        "",
        format_table(EvalResult(first["dataset"], first["kind"], first["size"], list(first["metrics"]), models)),
    ]
    warning = small_sample_warning(first["size"])
    if warning:
        lines.append(f"warning: {warning}")
    lines.append("")
    for stage, record in state.stages.items():
        lines.append(f"{stage}: reused" if record.status == "reused" else f"{stage}: ran in {record.seconds:.1f} s")
    lines += [f"gate {outcome.gate}: passed - {outcome.detail}" for outcome in state.gates]
    if not checked(state):
        lines.append(f"no gates set: {NOT_CHECKED}")
    lines.append(f"report: {result.report}  (and {directory / 'report.md'}, {directory / 'pipeline.json'})")
    return lines


def _serve(model: Path, port: int) -> None:
    from embedops.serve.server import serve
    from embedops.serve.settings import ServeSettings

    serve(ServeSettings(model=str(model), port=port, normalize=True))


def run(args: argparse.Namespace) -> int:
    from embedops.pipeline import PipelineConfig, run_pipeline
    from embedops.train.distributed import current_world

    config = PipelineConfig.from_flags(vars(args))
    code = launch_if_asked(
        args,
        how_to_continue="run the same command again: it continues from the last checkpoint",
        leave_out=frozenset({"serve", "port"}),
    )
    if code is not None:  # --nproc: the processes ran the pipeline and rank 0 printed the summary
        if code == 0 and args.serve:
            from embedops.pipeline.ledger import recorded_stages
            from embedops.pipeline.state import final_model

            _serve(final_model(config.output, recorded_stages(config.output)), args.port)
        return code
    result = run_pipeline(config)
    if not current_world().is_main:
        return 0  # rank 0 reports (and serves)
    print("\n".join(summary_lines(result)))
    if args.serve:
        _serve(result.final_model, args.port)
    return 0
