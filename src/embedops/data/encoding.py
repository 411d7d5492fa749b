"""Encoding under a progress bar that says what is being encoded.

sentence-transformers' own bar is called "Batches" whatever it encodes, so a command that encodes two
lists shows two bars alike. `encode` draws one named bar per list instead, and keeps
sentence-transformers' batches (longest texts first), so each vector is the one a single
`model.encode` call returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer


def encode(
    model: SentenceTransformer, texts: list[str], *, label: str, batch_size: int, leave: bool = True, **options: Any
) -> np.ndarray:
    """`model.encode(texts, batch_size=..., convert_to_numpy=True, **options)` under a bar named `label`
    (shown on a terminal only, as embedops' other bars; cleared when done unless `leave`)."""
    import numpy as np
    from tqdm.auto import tqdm

    def batch(part: list[str]) -> np.ndarray:
        return model.encode(part, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True, **options)

    if not texts:
        return batch(texts)
    order = np.argsort([-len(text) for text in texts])  # how sentence-transformers orders them
    parts = []
    with tqdm(total=len(texts), desc=label, unit=" texts", disable=None, leave=leave) as bar:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            parts.append(batch([texts[row] for row in rows]))
            bar.update(len(rows))
    return np.concatenate(parts)[np.argsort(order)]
