"""report.md and report.html from the pipeline's state: what the run did and what its numbers are worth.

The sections are blocks (pipeline.render draws them as markdown and as self-contained HTML). Two verdicts
are said plainly because a reader acts on them: a run with no threshold set finished without being
checked against anything, and on a small evaluation set one query moves a score by points.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embedops.errors import EmbedopsError
from embedops.files import write_text_atomically
from embedops.models import resolve
from embedops.pipeline.recipe import Recipe
from embedops.pipeline.render import Block, Code, Heading, Image, Table, to_html, to_markdown
from embedops.pipeline.stages import directory_size
from embedops.pipeline.state import BUILDS, STAGES, ConfigRecord, DataRecord, PipelineState, Stage, stage_dir

# Below this many queries one query moves hit@1 by more than a point.
SMALL_EVALUATION = 100


def small_sample_warning(size: Mapping[str, int]) -> str | None:
    """A sentence on what one query is worth when the evaluation has fewer than SMALL_EVALUATION queries."""
    queries = size.get("queries")
    if queries is None or queries >= SMALL_EVALUATION:
        return None
    return (
        f"the evaluation has only {queries} queries, so one query is worth {100 / queries:.2f} points of hit@1 "
        "(and up to as much of mrr@10 and ndcg@10): a difference of a few points may be one or two queries"
    )


def limits(state: PipelineState) -> list[str]:
    """The thresholds besides --gate that this run held its models to."""
    config = state.config
    held = [("--max-forgetting", config["max_forgetting"] if state.forgetting else None)]
    held.append(("--max-drift", config["max_drift"] if Stage.QUANTIZE in state.stages else None))
    return [f"{flag} {value:g}" for flag, value in held if value is not None]


# What a finished run says instead of "passed" when it had no gate or limit to pass.
NOT_CHECKED = "nothing was required of the models (no --gate, --max-forgetting or --max-drift was given)"


def checked(state: PipelineState) -> bool:
    """Whether the run held its models to any threshold."""
    return bool(state.gates or limits(state))


def _megabytes(path: Path) -> str:
    return f"{directory_size(path) / 1e6:.1f} MB" if path.is_dir() else "-"


def _status(state: PipelineState) -> str:
    if state.status != "passed":
        return f"**Stopped**: {state.failure}"
    if state.gates:
        return f"**Passed**: every stage finished; {len(state.gates)} gate check(s) held."
    if checked(state):
        return f"**Passed**: every stage finished within {' and '.join(limits(state))}; no --gate was set."
    return f"**No gates set**: every stage finished, but {NOT_CHECKED}."


def _data_blocks(config: ConfigRecord, data: DataRecord) -> list[Block]:
    prep = data.get("prep")
    removed = ", ".join(f"{count} {reason}" for reason, count in (prep["removed"] if prep else {}).items()) or "none"
    rows = [
        ["training file", f"`{config['data']}`"],
        ["sha256", f"`{data['sha256'][:16]}…`"],
        ["pairs", f"{prep['rows'] if prep else data['pairs']} read, {data['pairs']} kept after prep"],
        ["removed by prep", removed],
        ["hard negatives in the data", str(data["with_negative"])],
        ["mean length (chars)", f"anchor {data['anchor_chars']}, positive {data['positive_chars']}"],
    ]
    split = f"{data['train_pairs']} training"
    if data["validation_pairs"]:
        split += f" / {data['validation_pairs']} validation (picks the best epoch)"
    if config["eval_data"]:
        rows += [["split", split + " pairs"], ["evaluation data", f"`{config['eval_data']}`"]]
    else:
        rows += [
            ["split", f"{split} / {data['eval_pairs']} evaluation pairs"],
            ["hold-out", f"{data['groups']} groups of shared texts, whole groups held out (no leakage)"],
            [
                "held-out retrieval",
                f"held-out questions ranked against {data['heldout_documents']} answers "
                "(all held-out ones plus training ones as distractors)",
            ],
        ]
    return [Heading("Data"), Table(["", "value"], rows)]


_STOP_REASONS = {
    "patience": "patience ran out (epochs in a row without a new best)",
    "ceiling": "the epoch ceiling was reached",
    "budget": "the time budget would have been exceeded by another epoch",
}


def _probe_blocks(probe: dict[str, Any], metric: str) -> list[Block]:
    rows = [["base model", f"{probe['base_score'] * 100:.2f}", "", ""]]
    for item in probe["candidates"]:
        chosen = "chosen" if item["lr"] == probe["chosen_lr"] else ""
        rows.append([f"{item['lr']:g}", f"{item['score'] * 100:.2f}", f"{item.get('seconds', 0):g}", chosen])
    return [
        f"Learning-rate probe: each rate trained {probe['steps']} steps from the base weights on the same batches, "
        f"then scored on the validation data ({metric}, x100); the best one trains the model.",
        Table(["learning rate", metric, "seconds", ""], rows),
    ]


def _selection_blocks(directory: Path, selection: dict[str, Any]) -> list[Block]:
    metric, best = selection["metric"], selection["best_epoch"]
    rows = [
        [
            str(point["epoch"]),
            f"{point[metric] * 100:.2f}",
            f"{point['lr']:.2g}" if "lr" in point else "",
            "kept" if point["epoch"] == best else "",
        ]
        for point in selection["curve"]
    ]
    verdict = (
        "no epoch beat the weights before training, so the published model keeps them"
        if best == 0
        else f"epoch {best} is the published model"
    )
    stopped_by = selection.get("stopped_by", "patience" if selection["stopped_early"] else "ceiling")
    documents = f", {selection['documents']} documents" if selection.get("documents") else ""
    blocks: list[Block] = []
    if selection.get("probe"):
        blocks += _probe_blocks(selection["probe"], metric)
    blocks += [
        f"Validation {metric} on `{selection['source']}`{documents} after each epoch (x100): {verdict}. "
        f"Training stopped because {_STOP_REASONS.get(stopped_by, stopped_by)}; validation took "
        f"{selection.get('validation_seconds', 0):g} s in all.",
        Table(["epoch", metric, "learning rate", ""], rows),
    ]
    plot = stage_dir(directory, Stage.FINETUNE) / "validation.png"
    if plot.is_file():
        blocks.append(Image(plot.relative_to(directory), "validation metric per epoch"))
    return blocks


def _training_blocks(directory: Path, state: PipelineState, recipe: Recipe) -> list[Block]:
    lr = f"{recipe.lr:g}" if recipe.lr is not None else "probed"
    blocks: list[Block] = [
        Heading("Recipe"),
        Table(
            ["epochs (most)", "batch size", "learning rate", "schedule", "mined negatives", "patience"],
            [
                [
                    str(recipe.epochs),
                    str(recipe.batch_size),
                    lr,
                    recipe.lr_schedule,
                    str(recipe.mine_negatives),
                    str(recipe.patience or "off"),
                ]
            ],
        ),
        "\n".join(f"- {line}" for line in recipe.why),
    ]
    training = state.training()
    if training:
        summary = (
            f"{training['steps']} steps, {training['epochs_run']:g} epoch(s), over {training['pairs']} training "
            f"examples at learning rate {training['lr']:g}, in {training['seconds']} s"
        )
        probe_seconds = training.get("probe_seconds")
        if probe_seconds:
            summary += f" ({probe_seconds:g} s of them probing learning rates)"
        processes = training.get("distributed")
        if processes:
            summary += (
                f"; {processes['world_size']} processes on {processes['nodes']} node(s) ({processes['backend']}), "
                f"each anchor ranked against the {processes['effective_batch_size']} candidates of all of them"
            )
        blocks += [Heading("Training"), summary + "."]
        mined = training.get("mined")
        if mined:
            blocks.append(
                f"Hard negatives: {mined['with_mined']} of {mined['pairs']} pairs got a mined one; "
                f"{mined['with_random']} had none in the rank window and got a random passage, so every pair trains."
            )
        selection = training.get("selection")
        if selection:
            blocks += _selection_blocks(directory, selection)
        loss = stage_dir(directory, Stage.FINETUNE) / "loss.png"
        if loss.is_file():
            blocks.append(Image(loss.relative_to(directory), "training loss per step"))
    return blocks


def _metric_blocks(state: PipelineState) -> list[Block]:
    scored = state.scored()
    if not scored:
        return []
    first = scored[0][1]
    base = first["metrics"]
    header = ["metric", *(STAGES[stage].label for stage, _ in scored)]
    rows = []
    for metric, value in base.items():
        row = [metric, f"{value * 100:.2f}"]
        for _, result in scored[1:]:
            score = result["metrics"][metric]
            row.append(f"{score * 100:.2f} ({(score - value) * 100:+.2f})")
        rows.append(row)
    size = ", ".join(f"{count} {name}" for name, count in first["size"].items())
    blocks: list[Block] = [
        Heading("Evaluation"),
        f"`{first['dataset']}` ({first['kind']}: {size}). Scores x100; (delta) in points against the base model.",
        Table(header, rows),
    ]
    warning = small_sample_warning(first["size"])
    if warning:
        blocks.append(f"**Small evaluation set**: {warning}.")
    if state.gates:
        blocks.append(
            Table(
                ["gate", "model", "result"],
                [[f"`{g.gate}`", g.model, ("passed - " if g.passed else "FAILED - ") + g.detail] for g in state.gates],
            )
        )
    return blocks


def _forgetting_blocks(state: PipelineState) -> list[Block]:
    forgetting = state.forgetting
    if not forgetting:
        return []
    limit = forgetting.max_forgetting
    verdict = "no limit set (--max-forgetting)" if limit is None else f"limit {limit:g} points: "
    if limit is not None:
        verdict += "held" if forgetting.passed else "BROKEN"
    return [
        Heading("General ability"),
        f"What tuning cost outside the domain: Spearman (x100) on the {forgetting.data}; {verdict}.",
        Table(
            ["base", "fine-tuned", "change (points)"],
            [[f"{forgetting.base * 100:.2f}", f"{forgetting.finetuned * 100:.2f}", f"{forgetting.change_points:+.2f}"]],
        ),
    ]


def _quantization_blocks(state: PipelineState) -> list[Block]:
    result = state.quantization()
    if not result:
        return []
    limit, drift = state.config["max_drift"], result["drift"]
    verdict = f"within --max-drift {limit:g}" if limit is not None else "measured (no --max-drift limit)"
    return [
        Heading("Quantization"),
        f"{result['method']} (`{result['file']}`): drift {drift['drift']:.4f} (1 - mean cosine), {verdict}.",
        Table(
            ["mean cosine", "p5 cosine", "min cosine", "top-10 overlap", "texts"],
            [
                [
                    f"{drift['mean_cosine']:.4f}",
                    f"{drift['p5_cosine']:.4f}",
                    f"{drift['min_cosine']:.4f}",
                    f"{drift['top10_overlap']:.1%}",
                    f"{drift['samples']} training texts",
                ]
            ],
        ),
    ]


def _artifact_blocks(directory: Path, state: PipelineState) -> list[Block]:
    base_model = state.config["base_model"]
    try:
        base_path = resolve(base_model).path
    except EmbedopsError:
        base_path = None
    rows = [["base", f"`{base_model}`", _megabytes(base_path) if base_path else "-", "-"]]
    for stage in BUILDS:
        if stage in state.stages:
            path = stage_dir(directory, stage)
            rows.append([STAGES[stage].label, f"`{path}`", _megabytes(path), state.stages[stage].status])
    stage_rows = [
        [str(stage), record.status, f"{record.seconds:.1f}", f"`{record.input_hash[:12]}`"]
        for stage, record in state.stages.items()
    ]
    return [
        Heading("Artifacts"),
        Table(["model", "path", "size", "this run"], rows),
        Table(["stage", "this run", "seconds", "inputs hash"], stage_rows),
    ]


def _command_blocks(directory: Path, state: PipelineState, reproduce: str) -> list[Block]:
    served = state.final_model(directory)
    serve = shlex.join(["embedops", "serve", "--model", str(served), "--port", "8000", "--normalize"])
    return [
        Heading("Reproduce and serve"),
        "Re-running the same command reuses every stage whose inputs are unchanged.",
        Code(reproduce),
        Code(serve),
    ]


def build(directory: Path, state: PipelineState) -> list[Block]:
    """The report's blocks; a section appears once the stage it describes has finished."""
    blocks: list[Block] = [Heading(f"embedops pipeline: {directory.name}", 1), _status(state)]
    if state.data:
        blocks += _data_blocks(state.config, state.data)
    if state.recipe:
        blocks += _training_blocks(directory, state, state.recipe)
    blocks += [*_metric_blocks(state), *_forgetting_blocks(state), *_quantization_blocks(state)]
    blocks += _artifact_blocks(directory, state)
    if state.reproduce:
        blocks += _command_blocks(directory, state, state.reproduce)
    return blocks


def write_reports(directory: Path, state: PipelineState) -> Path:
    """Write report.md and report.html into `directory`; returns the HTML path."""
    blocks = build(directory, state)
    write_text_atomically(directory / "report.md", to_markdown(blocks))
    target = directory / "report.html"
    write_text_atomically(target, to_html(blocks, directory, f"embedops pipeline: {directory.name}"))
    return target
