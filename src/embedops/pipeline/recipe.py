"""Choose the training recipe from the data when not given: how long and at what step is left to
validation, the rest follows the size of the set.

- Length: a generous ceiling of epochs; the model is scored on validation data after every epoch, the
  best epoch is kept, a stalled epoch goes back to it at half the step, and `patience` stalled epochs in
  a row end the run
  (train.selection). A domain-shift set (claims -> abstracts, about 700 pairs) kept gaining up to 20
  epochs, while WikiQA peaked after two: no fixed count serves both.
- Step: a short probe of a few rates on the validation data before the real run (train.probe), where a
  table keyed on the number of pairs picked 2e-5 for both of those sets and cost the first one about 12
  nDCG@10 points.
- Batch: 32 in-batch examples, 64 for large sets, capped so every epoch still has several steps.
- Hard negatives: one mined per pair with the base model; near-misses teach the model what in-batch
  random negatives cannot (WikiQA: nDCG@10 73.3 with mined negatives against 72.5 without,
  bench/RESULTS.md). A pair that gets no mined negative still trains, with a random one (data.mine).
Without validation (--patience 0) nothing can decide, so the run is a fixed, short, linearly decayed
schedule at the usual step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from embedops.train.config import DEFAULT_LR
from embedops.train.probe import FULL_CANDIDATES

MAX_EPOCHS = 30  # a ceiling, not a plan: validation ends the run (the domain-shift set above wanted 20+)
FIXED_EPOCHS = 3  # the length when nothing validates (--patience 0)
LARGE_SET = 50_000  # pairs from which 64 in-batch examples pay
MIN_STEPS_PER_EPOCH = 8
# Mining skips each anchor's top 10 passages (likely unmarked positives), so it needs far more passages.
MIN_PAIRS_TO_MINE = 100
DEFAULT_PATIENCE = 2
LR_DECAY = 0.5  # the step after an epoch without a new best
# LoRA trains few weights starting from zero; finetune's own defaults give it 10x the full-model step.
LORA_LR_FACTOR = DEFAULT_LR["lora"] / DEFAULT_LR["full"]


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float | None  # None: the probe picks one of lr_candidates
    lr_candidates: list[float] = field(default_factory=list)
    mine_negatives: int = 0
    patience: int = DEFAULT_PATIENCE  # 0: every epoch runs and the last one is kept
    lr_schedule: str = "plateau"
    why: list[str] = field(default_factory=list)

    def to_record(self) -> dict:
        return asdict(self)


def choose_recipe(
    pairs: int,
    *,
    use_lora: bool,
    with_negatives: bool = False,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    mine_negatives: int | None = None,
    patience: int | None = None,
) -> Recipe:
    """The recipe for `pairs` training pairs; values given by the user win and are marked as given."""
    why = [f"{pairs:,} training pairs"]
    if patience is None:
        patience = DEFAULT_PATIENCE
        why.append(
            f"training length by validation: the best epoch is kept, an epoch without a new best goes back to "
            f"it at half the learning rate, and {patience} in a row stop the run"
        )
    elif patience == 0:
        why.append("early stopping off (--patience 0): every epoch runs and the last one is kept")
    else:
        why.append(f"early stopping: patience {patience} (given)")
    validated = patience > 0

    if epochs is None:
        epochs = MAX_EPOCHS if validated else FIXED_EPOCHS
        why.append(
            f"epochs {epochs} at most: a ceiling, validation ends the run sooner"
            if validated
            else f"epochs {epochs}: a fixed short run, since nothing validates"
        )
    else:
        why.append(f"epochs {epochs}: given" + (" (a ceiling)" if validated else ""))

    if batch_size is None:
        wanted = 64 if pairs > LARGE_SET else 32
        batch_size = min(wanted, max(2, pairs // MIN_STEPS_PER_EPOCH))
        reason = f"{wanted} in-batch examples"
        if batch_size < wanted:
            reason += f", capped at {batch_size} so each epoch has at least {MIN_STEPS_PER_EPOCH} steps"
        why.append(f"batch size {batch_size}: {reason}")
    else:
        why.append(f"batch size {batch_size}: given")

    factor = LORA_LR_FACTOR if use_lora else 1.0
    candidates: list[float] = []
    if lr is not None:
        why.append(f"learning rate {lr:g}: given")
    elif validated:
        candidates = [rate * factor for rate in FULL_CANDIDATES]
        listed = ", ".join(f"{rate:g}" for rate in candidates)
        why.append(f"learning rate: probed on the validation data among {listed}" + (" (LoRA)" if use_lora else ""))
    else:
        lr = DEFAULT_LR["lora" if use_lora else "full"]
        why.append(f"learning rate {lr:g}: the usual step, since nothing validates a probe")

    if mine_negatives is None:
        mine_negatives = 0 if with_negatives or pairs < MIN_PAIRS_TO_MINE else 1
        if with_negatives:
            why.append("hard negatives: the data brings its own")
        elif mine_negatives:
            why.append(
                "hard negatives: 1 mined per pair with the base model (near-misses in-batch negatives lack); "
                "a pair with none mined gets a random one"
            )
        else:
            why.append(f"hard negatives: none; mining needs at least {MIN_PAIRS_TO_MINE} pairs to draw from")
    else:
        why.append(f"hard negatives: {mine_negatives} mined per pair (given)")
    schedule = "plateau" if validated else "linear"
    return Recipe(epochs, batch_size, lr, candidates, mine_negatives, patience, schedule, why)
