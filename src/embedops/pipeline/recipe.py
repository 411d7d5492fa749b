"""Choose epochs, learning rate, batch size and hard-negative mining from the training set when not given.

Small domain sets (up to 500 pairs) need several passes at a larger step to move the model at all; from
there on the usual 2e-5: at 5e-5, WikiQA's 1,040 pairs made the dev split's nDCG@10 fall from 0.6877 to
0.6873 after one epoch and 0.6659 after two (bench/RESULTS.md). Large sets get enough updates from one
or two passes, and more would overfit. The epoch count is a ceiling:
the model is scored on validation data after every epoch and the best epoch is kept (train.selection),
so the ceiling can be generous without the risk of shipping an overfit model. For small sets it is 4: on
the bundled help-center pairs a ceiling of 6 ran 2 more epochs (5.7 against 3.7 minutes on 2 cores)
for a best validation nDCG@10 of 0.870 against 0.883 (the shorter schedule decays the rate sooner) and
held-out nDCG@10 +6.5 against +5.0 points over the base model, a difference of about one of the 24
held-out questions. The batch is capped by the data so that every epoch still has several optimizer
steps (warm-up and decay need steps to act on).
Pairs without negatives get one mined hard negative each: near-misses teach the model what in-batch
random negatives cannot (WikiQA: nDCG@10 73.3 with mined negatives against 72.5 without, bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from embedops.train.config import DEFAULT_LR

# (at most this many pairs, most epochs, learning rate, batch size, what such a set is called)
_TIERS = (
    (500, 4, 1e-4, 32, "a small domain set"),
    (5_000, 3, 2e-5, 32, "a modest domain set"),
    (50_000, 2, 2e-5, 64, "a large set"),
    (None, 1, 2e-5, 64, "a very large set"),
)
MIN_STEPS_PER_EPOCH = 8
# Mining skips each anchor's top 10 passages (likely unmarked positives), so it needs far more passages.
MIN_PAIRS_TO_MINE = 100
DEFAULT_PATIENCE = 2
# LoRA trains few weights starting from zero; finetune's own defaults give it 10x the full-model step.
LORA_LR_FACTOR = DEFAULT_LR["lora"] / DEFAULT_LR["full"]


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    mine_negatives: int = 0
    patience: int = DEFAULT_PATIENCE  # 0: every epoch runs and the last one is kept
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
    limit, tier_epochs, tier_lr, tier_batch, label = next(t for t in _TIERS if t[0] is None or pairs <= t[0])
    bound = f"at most {limit:,}" if limit is not None else f"more than {_TIERS[-2][0]:,}"
    why = [f"{pairs:,} training pairs is {label} ({bound} pairs)"]

    if patience is None:
        patience = DEFAULT_PATIENCE
        why.append(
            f"early stopping: the best epoch on validation data is kept; training stops after {patience} "
            "epochs without a new best"
        )
    elif patience == 0:
        why.append("early stopping off (--patience 0): every epoch runs and the last one is kept")
    else:
        why.append(f"early stopping: patience {patience} (given)")

    if epochs is None:
        epochs = tier_epochs
        purpose = "several passes so a small set moves the model" if epochs > 2 else "a large set needs few passes"
        why.append(f"epochs {epochs} at most: {purpose}")
    else:
        why.append(f"epochs {epochs}: given")

    if batch_size is None:
        cap = max(2, pairs // MIN_STEPS_PER_EPOCH)
        batch_size = min(tier_batch, cap)
        reason = f"{tier_batch} in-batch examples for {label}"
        if batch_size < tier_batch:
            reason += f", capped at {batch_size} so each epoch has at least {MIN_STEPS_PER_EPOCH} steps"
        why.append(f"batch size {batch_size}: {reason}")
    else:
        why.append(f"batch size {batch_size}: given")

    if lr is None:
        lr = tier_lr * (LORA_LR_FACTOR if use_lora else 1)
        reason = "a larger step for few examples" if tier_lr > DEFAULT_LR["full"] else "the usual full fine-tuning step"
        if use_lora:
            reason += f", x{LORA_LR_FACTOR:g} for LoRA"
        why.append(f"learning rate {lr:g}: {reason}")
    else:
        why.append(f"learning rate {lr:g}: given")

    if mine_negatives is None:
        mine_negatives = 0 if with_negatives or pairs < MIN_PAIRS_TO_MINE else 1
        if with_negatives:
            why.append("hard negatives: the data brings its own")
        elif mine_negatives:
            why.append("hard negatives: 1 mined per pair with the base model (near-misses in-batch negatives lack)")
        else:
            why.append(f"hard negatives: none; mining needs at least {MIN_PAIRS_TO_MINE} pairs to draw from")
    else:
        why.append(f"hard negatives: {mine_negatives} mined per pair (given)")
    return Recipe(epochs, batch_size, lr, mine_negatives, patience, why)
