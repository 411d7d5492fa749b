"""Choose epochs, learning rate and batch size from the size of the training set when not given.

Small domain sets need several passes at a larger step to move the model at all; large sets get enough
updates from one or two passes at the usual 2e-5, and more would overfit. The batch is capped by the
data so that every epoch still has several optimizer steps (warm-up and decay need steps to act on).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from embedops.train.config import DEFAULT_LR

# (at most this many pairs, epochs, learning rate, batch size, what such a set is called)
_TIERS = (
    (500, 5, 1e-4, 32, "a small domain set"),
    (5_000, 3, 5e-5, 32, "a modest domain set"),
    (50_000, 2, 2e-5, 64, "a large set"),
    (None, 1, 2e-5, 64, "a very large set"),
)
MIN_STEPS_PER_EPOCH = 8
# LoRA trains few weights starting from zero; finetune's own defaults give it 10x the full-model step.
LORA_LR_FACTOR = DEFAULT_LR["lora"] / DEFAULT_LR["full"]


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    why: list[str] = field(default_factory=list)
    early_stopping: bool = False  # every epoch runs to the end; the held-out score is checked afterwards

    def to_record(self) -> dict:
        return asdict(self)


def choose_recipe(
    pairs: int, *, use_lora: bool, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None
) -> Recipe:
    """The recipe for `pairs` training pairs; values given by the user win and are marked as given."""
    limit, tier_epochs, tier_lr, tier_batch, label = next(t for t in _TIERS if t[0] is None or pairs <= t[0])
    bound = f"at most {limit:,}" if limit is not None else f"more than {_TIERS[-2][0]:,}"
    why = [f"{pairs:,} training pairs is {label} ({bound} pairs)"]

    if epochs is None:
        epochs = tier_epochs
        why.append(
            f"epochs {epochs}: "
            + (
                "several passes so a small set moves the model"
                if epochs > 2
                else "a large set gives enough updates in few passes; more would overfit"
            )
        )
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
    why.append("no early stopping: every epoch runs; the held-out evaluation afterwards decides through the gates")
    return Recipe(epochs, batch_size, lr, why)
