"""Server configuration: one object, filled from defaults, then SERVE_* environment, then flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from embedops.models import DEFAULT_MODEL

TorchDtype = Literal["auto", "fp32", "fp16", "bf16"]


class ServeSettings(BaseSettings):
    """Everything `embedops serve` can be told; `SERVE_<FIELD>` sets any field from the environment."""

    model_config = SettingsConfigDict(env_prefix="SERVE_", extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    device: str | None = None
    dtype: TorchDtype = "auto"
    normalize: bool = False
    auto_truncate: bool = True
    # Engine batches running at once; None: one per core up to 4 on an ONNX Runtime CPU engine, each
    # on its share of the cores (serve/lanes.py), else 1.
    concurrency: int | None = Field(None, ge=1, le=64)
    batch_size: int = Field(32, ge=1, le=4096)
    # Most padded tokens in one engine batch; None: 512 on a CPU, 2048 on an accelerator (serve/lanes.py).
    max_batch_tokens: int | None = Field(None, ge=16)
    # Requests admitted (queued or running); the next one gets 429 at once instead of waiting.
    max_queue: int = Field(512, ge=1)
    max_inputs: int = Field(256, ge=1)
    max_chars: int = Field(20000, ge=1)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # Seconds for a whole request body to arrive once its headers have (408 after).
    body_timeout: float = Field(30.0, gt=0)
    api_key: SecretStr | None = None
    # Read once at start-up (a Kubernetes Secret mounted as a file), so the key never shows in `ps`.
    api_key_file: Path | None = None
    # /info and /metrics need the key too; None means "when a key is set".
    protect_info: bool | None = None
    # What POST /embed answers: the seed's object, or TEI's bare matrix for TEI clients.
    embed_api: Literal["seed", "tei"] = "seed"
    # The name responses give the model (OpenAI `model`, /info, /v1/models); default: its id or folder name.
    served_model_name: str | None = None
    workers: int = Field(1, ge=1, le=64)
    access_log: bool = True
    warmup: bool = True
    graceful_timeout: int = Field(30, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: Any) -> Any:
        """`api_key_file` becomes `api_key` here, so worker processes get the key and not the path."""
        if not isinstance(data, dict) or not data.get("api_key_file"):
            return data
        if data.get("api_key"):
            raise ValueError("give the API key or a file holding it, not both")
        path = Path(data["api_key_file"])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the API key file {path}: {exc}") from exc
        if not key:
            raise ValueError(f"the API key file {path} is empty")
        return {**data, "api_key": key, "api_key_file": None}

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @property
    def info_needs_key(self) -> bool:
        return self.api_key is not None and self.protect_info is not False

    def to_env(self) -> dict[str, str]:
        """The settings as SERVE_* variables, so worker processes rebuild exactly this object."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"SERVE_{name.upper()}"] = str(int(value) if isinstance(value, bool) else value)
        return env
