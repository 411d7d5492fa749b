"""`embedops demo`: the whole pipeline on the bundled model and bundled sample data, ending with the int8
model served over real HTTP and answering one /embed request, then a one-screen summary."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedops.errors import EmbedopsError

if TYPE_CHECKING:
    from embedops.pipeline.state import PipelineState

ORDER = 0
SAMPLE = "sample_pairs.tsv"
QUERY = "how do I get back photos I deleted by mistake?"
READY_TIMEOUT_S = 180


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the full pipeline on the bundled model and sample data (a photo-app help center), then serve it",
        description="Prep, fine-tune (best epoch kept), evaluate, quantize to int8 and evaluate again, write the "
        "report, then start the server on the int8 model and send it one /embed request. Re-running reuses "
        "every finished stage.",
    )
    parser.add_argument("--output", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--port", type=int, default=0, help="port for the served model (default: a free one)")
    parser.add_argument(
        "--write-sample", metavar="PATH", help="only write the bundled sample pairs to PATH (to try other commands on)"
    )
    parser.set_defaults(run=run)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            detail = (server.stderr.read() if server.stderr else "").strip().splitlines()[-1:]
            raise EmbedopsError(f"the server exited with code {server.returncode} before it was ready: {detail}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise EmbedopsError(f"the server was not ready within {READY_TIMEOUT_S} s")


def serve_one_request(model: Path, port: int) -> dict[str, Any]:
    """Start `embedops serve` on `model` in a subprocess, embed QUERY over HTTP, stop the server."""
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "embedops", "serve", "--model", str(model), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--normalize", "--no-access-log"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(base, server)
        started = time.perf_counter()
        answer = _post_json(f"{base}/embed", {"inputs": QUERY})
        answer["milliseconds"] = (time.perf_counter() - started) * 1000
        answer["url"] = f"{base}/embed"
        return answer
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _points(value: float) -> str:
    return f"{value * 100:.1f}"


def summary_lines(state: PipelineState, directory: Path, served: dict[str, Any], seconds: float) -> list[str]:
    """The one screen the demo ends with, read from the pipeline's state and the /embed answer."""
    from embedops.pipeline.report import small_sample_warning
    from embedops.pipeline.stages import directory_size
    from embedops.pipeline.state import STAGES, Stage, stage_dir

    data, recipe, training = state.data, state.recipe, state.training()
    quantization = state.quantization()
    assert data and recipe and training and quantization, "a finished demo run has every stage"
    selection = training.get("selection") or {}
    prep = data.get("prep")
    removed = sum(prep["removed"].values()) if prep else 0
    scores = [
        (quantization["dtype"] if stage is Stage.EVAL_QUANTIZED else STAGES[stage].label, record["metrics"])
        for stage, record in state.scored()
    ]
    base = scores[0][1]
    quality = []
    for metric in ("mrr@10", "ndcg@10", "hit@1"):
        cells = [f"{label} {_points(values[metric])}" for label, values in scores]
        gain = f"({(scores[1][1][metric] - base[metric]) * 100:+.1f} points fine-tuned)"
        quality.append(f"{metric:<8} " + " -> ".join(cells) + f"  {gain}")
    warning = small_sample_warning(state.evaluation(Stage.EVAL_BASE)["size"])
    caution = textwrap.wrap(warning, 68) if warning else []
    best = selection.get("best_epoch")
    stopped = f", stopped by {selection['stopped_by']}" if selection.get("stopped_early") else ""
    finetuned, quantized = stage_dir(directory, Stage.FINETUNE), stage_dir(directory, Stage.QUANTIZE)
    finetuned_mb, quantized_mb = directory_size(finetuned) / 1e6, directory_size(quantized) / 1e6
    lines = [
        "",
        "=" * 78,
        "embedops demo: bundled all-MiniLM-L6-v2 tuned on a photo-app help center",
        "=" * 78,
        f"data      {prep['rows'] if prep else data['pairs']} pairs read, {removed} removed by prep; "
        f"{data['train_pairs']} train / {data['validation_pairs']} validation / {data['eval_pairs']} held-out "
        "evaluation",
        f"recipe    up to {recipe.epochs} epochs, batch {recipe.batch_size}, lr {training['lr']:g}"
        f"{' (probed)' if recipe.lr is None else ''}, {recipe.mine_negatives} mined negative(s) per pair",
        f"training  best validation epoch {best} of {training['epochs_run']:g} run{stopped} ({training['seconds']} s)",
        f"quality   held-out questions searched among {data['heldout_documents']} help-center answers (x100):",
        *(f"          {line}" for line in quality),
        *(f"{'caution' if index == 0 else '':<10}{line}" for index, line in enumerate(caution)),
        f"size      fine-tuned {finetuned_mb:.1f} MB -> int8 {quantized_mb:.1f} MB ({quantized_mb / finetuned_mb:.0%})",
        f"served    POST {served['url']} -> dim {served['dim']}, {served['usage']['tokens']} tokens, "
        f"{served['milliseconds']:.0f} ms (int8 ONNX Runtime)",
        f"report    {directory.absolute() / 'report.html'}",
        f"serve it  embedops serve --model {quantized} --port 8000 --normalize",
        f"time      {seconds / 60:.1f} min (run again: finished stages are reused)",
    ]
    return lines


def run(args: argparse.Namespace) -> int:
    from importlib.resources import as_file, files

    from embedops.pipeline import PipelineConfig, run_pipeline

    if args.write_sample:
        target = Path(args.write_sample)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((files("embedops.resources") / SAMPLE).read_bytes())
        print(f"wrote {target}: the demo's {SAMPLE} (question<TAB>answer pairs of a photo-app help center)")
        return 0
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with as_file(files("embedops.resources") / SAMPLE) as sample:
        print(f"embedops demo: pipeline on the bundled all-MiniLM-L6-v2 and {sample.name}\n", flush=True)
        result = run_pipeline(PipelineConfig(data=sample, output=Path(args.output), quantize="int8"))
    print(f"\nstarting the server on {result.final_model} and sending one /embed request", flush=True)
    served = serve_one_request(result.final_model, args.port)
    lines = summary_lines(result.state, result.directory, served, time.perf_counter() - started)
    print("\n".join(lines))
    return 0
