"""`merge_adapter`: fold a LoRA adapter into its base weights, giving a plain full-precision artifact
that any SentenceTransformer runtime (ONNX export, TEI-style servers) can load without peft."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from embedops.artifact import ArtifactBuilder, Manifest, check_output_free
from embedops.errors import ConfigError
from embedops.models import load_merged, resolve


def merge_adapter(adapter_model: str | Path, output: str | Path, *, force: bool = False) -> tuple[Path, Manifest]:
    output = Path(output)
    check_output_free(output.absolute(), force=force)
    ref = resolve(adapter_model)
    adapter = ref.manifest.adapter
    if not adapter or adapter.get("merged", False):
        raise ConfigError(f"{ref.path} is not a LoRA adapter artifact (its manifest has no unmerged adapter)")
    model = load_merged(ref, device="cpu")
    manifest = dataclasses.replace(
        ref.manifest,
        kind="merged",
        parent=str(ref.path),
        adapter={**adapter, "merged": True},
        eval={},
        files_sha256={},
        created=None,
    )
    with ArtifactBuilder(output, force=force) as builder:
        model.save(str(builder.path), create_model_card=False)
        readme = ref.path / "README.md"
        if readme.is_file():
            (builder.path / "README.md").write_text(readme.read_text(encoding="utf-8"), encoding="utf-8")
        return builder.publish(manifest), manifest
