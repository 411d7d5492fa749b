"""`embedops pipeline` on the tiny model: a full run, stage reuse, re-running what changed, gates that
stop the run with valid artifacts left behind, the leak-free hold-out split, the recipe, and the HTML
report as a real browser shows it where one is installed."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from embedops.artifact import read_manifest
from embedops.cli import main
from embedops.evaluate.datasets import RetrievalTask, load_beir
from embedops.models import resolve
from embedops.pipeline.recipe import choose_recipe
from embedops.pipeline.split import HELDOUT_DIR, TRAIN_FILE, split_pairs

TOPICS = ["storage", "backup", "network", "login", "upload", "search", "billing", "printer"]
STAGES = [
    "data",
    "eval-base",
    "general-base",
    "finetune",
    "eval-finetuned",
    "general-finetuned",
    "quantize",
    "eval-quantized",
]


def pairs_file(path: Path, count: int, *, wording: str = "restart the service") -> Path:
    lines = [
        f"how do I fix {TOPICS[i % len(TOPICS)]} problem number {i}\tto repair {TOPICS[i % len(TOPICS)]} "
        f"issue {i}, {wording}"
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pipeline_args(data: Path, output: Path, tiny_model_dir: Path, *extra: str) -> list[str]:
    return [
        "pipeline",
        "--data",
        str(data),
        "--output",
        str(output),
        "--base-model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--eval-fraction",
        "0.25",
        *extra,
    ]


def ledger(output: Path) -> dict:
    return json.loads((output / "pipeline.json").read_text())


@pytest.fixture(scope="module")
def first_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One full run (data, finetune, both evals, int8, eval) shared by the tests that read or copy it."""
    root = tmp_path_factory.mktemp("pipeline")
    data, output = pairs_file(root / "pairs.tsv", 32), root / "run"
    code = main(pipeline_args(data, output, tiny_model_dir, "--gate", "ndcg@10>=-100", "--max-drift", "0.5"))
    assert code == 0
    return data, output


@pytest.mark.slow
def test_full_run_writes_every_artifact_and_the_report(first_run: tuple[Path, Path]) -> None:
    _, output = first_run
    document = ledger(output)
    assert document["status"] == "passed" and list(document["stages"]) == STAGES
    assert all(record["status"] == "ran" and len(record["input_hash"]) == 64 for record in document["stages"].values())
    data = document["data"]
    assert data["prep"]["rows"] == 32 and data["prep"]["kept"] == data["pairs"]
    assert data["train_pairs"] + data["eval_pairs"] + data["validation_pairs"] == data["pairs"]
    assert data["validation_pairs"] >= 1
    assert document["recipe"]["epochs"] == 1 and any("given" in line for line in document["recipe"]["why"])
    selection = document["stages"]["finetune"]["result"]["selection"]
    assert [point["epoch"] for point in selection["curve"]] == [0, 1] and selection["metric"] == "ndcg@10"
    assert selection["source"] == "heldout (dev split)"
    probe = selection["probe"]  # no --lr: the step was probed on the validation side
    assert [item["lr"] for item in probe["candidates"]] == [2e-5, 5e-5, 1e-4]
    assert probe["chosen_lr"] == document["stages"]["finetune"]["result"]["lr"]
    assert "Learning-rate probe" in (output / "report.md").read_text()
    assert [gate["model"] for gate in document["gates"]] == ["fine-tuned", "quantized"]
    assert resolve(output / "finetuned").manifest.kind == "finetuned"
    quantized = resolve(output / "quantized").manifest
    assert quantized.kind == "quantized" and quantized.dtype == "int8"
    assert document["stages"]["quantize"]["result"]["drift"] == quantized.quantization["drift"]

    markdown = (output / "report.md").read_text()
    assert "**Passed**: every stage finished; 2 gate check(s) held." in markdown
    for section in ("## Data", "## Recipe", "## Training", "## Evaluation", "## Quantization", "## Artifacts"):
        assert section in markdown
    assert "Validation ndcg@10 on `heldout (dev split)`" in markdown and "| 0 |" in markdown
    assert "![training loss per step](finetuned/loss.png)" in markdown
    assert "embedops pipeline --data" in markdown and "embedops serve --model" in markdown
    page = (output / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "<style>" in page  # loss and validation curves
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline


@pytest.mark.slow
def test_second_run_reuses_every_stage(
    first_run: tuple[Path, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, output = first_run
    before = ledger(output)["stages"]
    code = main(pipeline_args(data, output, tiny_model_dir, "--gate", "ndcg@10>=-100", "--max-drift", "0.5"))
    printed = capsys.readouterr()
    assert code == 0
    for stage in STAGES[1:]:  # as it happens on stderr, and in the summary on stdout
        assert f"{stage}: reused" in printed.err and f"\n{stage}: reused\n" in printed.out
    assert "gate ndcg@10>=-100: passed - fine-tuned: ndcg@10" in printed.out
    stages = ledger(output)["stages"]
    assert all(record["status"] == "reused" for name, record in stages.items() if name != "data")
    assert stages["finetune"]["output_hash"] == before["finetune"]["output_hash"]


@pytest.mark.slow
def test_changed_data_reruns_finetune_and_what_follows(
    first_run: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, original = first_run
    output = tmp_path / "run"
    shutil.copytree(original, output)
    changed = pairs_file(tmp_path / "pairs.tsv", 32, wording="then reboot")
    code = main(pipeline_args(changed, output, tiny_model_dir, "--gate", "ndcg@10>=-100", "--max-drift", "0.5"))
    printed = capsys.readouterr()
    assert code == 0
    assert "finetune: running" in printed.err and "quantize: running" in printed.err
    assert "\nfinetune: ran in " in printed.out and "\nquantize: ran in " in printed.out
    stages, before = ledger(output)["stages"], ledger(original)["stages"]
    assert stages["finetune"]["status"] == "ran"
    assert stages["finetune"]["inputs"]["data_sha256"] != before["finetune"]["inputs"]["data_sha256"]
    assert stages["eval-base"]["status"] == "ran"  # the held-out side changed with the data
    assert read_manifest(output / "quantized").parent == str(output / "finetuned")
    assert not list(output.glob(".finetuned.*")) and not list(output.glob(".quantized.*"))


@pytest.mark.slow
def test_impossible_gate_stops_with_exit_1_and_valid_artifacts(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 24), tmp_path / "run"
    code = main(pipeline_args(data, output, tiny_model_dir, "--gate", "ndcg@10>=+100"))
    error = capsys.readouterr().err
    assert code == 1
    assert "gate ndcg@10>=+100 failed for fine-tuned: ndcg@10" in error and "points short" in error
    document = ledger(output)
    assert document["status"] == "failed" and "ndcg@10>=+100" in document["failure"]
    assert list(document["stages"]) == STAGES[:6]
    assert resolve(output / "finetuned").manifest.kind == "finetuned"  # verified: every file hash matches
    assert not (output / "quantized").exists()
    assert "**Stopped**: gate ndcg@10>=+100 failed" in (output / "report.md").read_text()


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("ndcg@10>=60", "for a gain in points write ndcg@10>=+60"),
        ("ndcg@10 at least 0.5", "expected METRIC OP NUMBER"),
        ("recall@5>=0.5", "recall@5 is not among them"),
    ],
)
def test_bad_gate_fails_before_training(
    gate: str, message: str, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, output = pairs_file(tmp_path / "pairs.tsv", 16), tmp_path / "run"
    assert main(pipeline_args(data, output, tiny_model_dir, "--gate", gate)) == 2
    assert message in capsys.readouterr().err
    assert not (output / "finetuned").exists()


def test_hold_out_keeps_shared_texts_on_one_side(tmp_path: Path) -> None:
    rows = [f"question {i}\tanswer {i}" for i in range(40)]
    rows += [f"Question  {i}\tanother answer {i}" for i in range(0, 40, 4)]  # same anchor, other spacing and case
    rows += [f"rephrased question {i}\tanswer {i}" for i in range(1, 40, 4)]  # same positive
    data = tmp_path / "pairs.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = split_pairs(data, tmp_path / "split", eval_fraction=0.2, validation_fraction=0.1, seed=1)
    train = [json.loads(line) for line in (tmp_path / "split" / TRAIN_FILE).read_text().splitlines()]
    evaluation, validation = (load_beir(tmp_path / "split" / HELDOUT_DIR, split) for split in ("test", "dev"))
    assert summary.groups == 40 and summary.train_pairs + summary.eval_pairs + summary.validation_pairs == 60
    assert len(train) == summary.train_pairs and 12 <= summary.eval_pairs <= 15 and 6 <= summary.validation_pairs <= 8

    def normal(text: str) -> str:
        return " ".join(text.casefold().split())

    def held_texts(task: RetrievalTask) -> set[str]:
        answers = {task.documents[i] for relevant in task.relevant for i in relevant}
        return {normal(text) for text in [*task.queries, *answers]}

    train_texts = {normal(row[key]) for row in train for key in ("anchor", "positive")}
    assert not train_texts & held_texts(evaluation) and not train_texts & held_texts(validation)
    assert not held_texts(evaluation) & held_texts(validation)
    # Every answer is in the corpus: held-out ones to find, training ones as distractors.
    assert len(evaluation.documents) == summary.heldout_documents == 40 + 10
    assert split_pairs(data, tmp_path / "again", eval_fraction=0.2, validation_fraction=0.1, seed=1) == summary


def test_recipe_leaves_length_and_step_to_validation() -> None:
    small = choose_recipe(200, use_lora=False)
    assert (small.epochs, small.batch_size, small.lr, small.mine_negatives, small.patience) == (30, 25, None, 1, 2)
    assert small.lr_candidates == [2e-5, 5e-5, 1e-4] and small.lr_schedule == "plateau"
    assert any("capped at 25" in line for line in small.why) and any("probed" in line for line in small.why)
    assert choose_recipe(60, use_lora=False).mine_negatives == 0  # too few passages to mine from
    assert choose_recipe(3_000, use_lora=False, with_negatives=True).mine_negatives == 0
    assert choose_recipe(200_000, use_lora=False).batch_size == 64
    assert choose_recipe(20_000, use_lora=True).lr_candidates == pytest.approx([2e-4, 5e-4, 1e-3])
    unvalidated = choose_recipe(3_000, use_lora=False, patience=0)  # nothing can decide: a short fixed run
    assert (unvalidated.epochs, unvalidated.lr, unvalidated.lr_candidates) == (3, 2e-5, [])
    assert unvalidated.lr_schedule == "linear"
    given = choose_recipe(200, use_lora=False, epochs=2, batch_size=16, lr=3e-5, mine_negatives=0, patience=0)
    assert (given.epochs, given.batch_size, given.lr, given.mine_negatives, given.patience) == (2, 16, 3e-5, 0, 0)
    assert sum("given" in line for line in given.why) == 4 and any("early stopping off" in line for line in given.why)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(first_run: tuple[Path, Path], tmp_path: Path) -> None:
    """What the browser shows: every cell of the markdown report's tables is text on the rendered page,
    and both plots decode as images (a broken data URI renders as a 0 x 0 image, caught here as well)."""
    _, output = first_run
    page = output / "report.html"
    check = tmp_path / "check.html"  # the report in a frame, measured by a script once it has loaded
    check.write_text(
        f'<iframe id="r" src="{page.as_uri()}" width="1200" height="2000"></iframe><pre id="out"></pre><script>'
        'document.getElementById("r").onload = () => {'
        " const d = document.getElementById('r').contentDocument;"
        " const sizes = [...d.images].map(i => i.naturalWidth + 'x' + i.naturalHeight);"
        " document.getElementById('out').textContent = JSON.stringify({text: d.body.innerText, sizes}); };"
        "</script>"
    )
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            check.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    dumped = result.stdout.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    shown = json.loads(html.unescape(dumped))
    text = " ".join(shown["text"].split())
    cells = [
        " ".join(cell.replace("**", "").replace("`", "").split())
        for line in (output / "report.md").read_text().splitlines()
        if line.startswith("|") and not set(line) <= set("|-: ")
        for cell in line.strip("|").split("|")
    ]
    assert len(cells) > 20 and [cell for cell in cells if cell not in text] == []
    assert len(shown["sizes"]) == 2 and all(size != "0x0" for size in shown["sizes"]), shown["sizes"]
