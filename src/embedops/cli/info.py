"""`embedops info MODEL`: what an artifact (or any model reference) is; `--verify` checks it whole."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 90


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a model artifact, directory or hub id")
    parser.add_argument("model", help="artifact directory, SentenceTransformer directory or hub id")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the artifact against its manifest and list every difference (exit 1 if any)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedops.artifact import summary
    from embedops.models import remote_code, resolve

    if args.verify:
        return _verify(Path(args.model), as_json=args.json)
    # Describing a model runs none of its code, so one that would is shown, with a warning, not refused.
    ref = resolve(args.model, trust_remote_code=True)
    code = remote_code(ref.path)
    if args.json:
        record = {"path": str(ref.path), "source": ref.source, **ref.manifest.to_dict(), "remote_code": code}
        print(json.dumps(record, indent=2))
    else:
        print(summary(ref.manifest, ref.path) + f"\n  source        {ref.source}")
        if code:
            print(f"  remote code   {code}; loading it needs --trust-remote-code")
    return 0


def _verify(path: Path, *, as_json: bool) -> int:
    """Every difference between an artifact and its manifest, read without trusting the manifest."""
    from embedops.artifact import artifact_problems, read_manifest
    from embedops.errors import ArtifactError

    if not path.is_dir():
        raise ArtifactError(f"--verify checks an artifact directory; {path} is not a directory")
    manifest = read_manifest(path, check_digest=False)
    if manifest is None:
        raise ArtifactError(f"{path} has no embedops.json, so there is nothing recorded to verify it against")
    problems = artifact_problems(path, manifest)
    if as_json:
        print(json.dumps({"path": str(path), "ok": not problems, "problems": problems}, indent=2))
    elif problems:
        print(f"{path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  {problem}")
    else:
        print(f"{path}: ok ({len(manifest.files_sha256)} files and the manifest match)")
    return 1 if problems else 0
