"""Service configuration: one pydantic-settings class, read from ``CXR_*`` variables and ``.env``.

``.env`` (in the working directory) holds the settings of a local run (``make serve``) only; the
compose stack keeps its own in ``deploy/compose.env`` and passes them as environment variables,
so its values (auth on, ``cuda``) never reach a laptop run. Build it with :func:`get_settings`
(tests pass their own ``Settings(...)`` to ``create_app``); nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MAX_BEAM_SIZE = 5  # the API accepts beam_size 1..5


class Settings(BaseSettings):
    """Every knob of the service; env var = ``CXR_`` + upper-case field name."""

    # hide_input_in_errors: a ValidationError (printed at start-up) never echoes a value, so a
    # bad CXR_API_KEYS entry cannot print the valid keys beside it
    model_config = SettingsConfigDict(
        env_prefix="CXR_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        env_ignore_empty=True,  # `CXR_X=` (empty, as compose may pass it) means the default
    )

    # --- model ---
    weights_dir: Path = Path("weights")  # folder holding manifest.json and the ONNX graphs
    provider: Literal["auto", "cpu", "cuda"] = "auto"  # ORT provider; auto = CUDA if available
    # ORT intra-op threads per session; None = ORT's default (all cores)
    intra_op_threads: int | None = Field(default=None, ge=1, le=256)
    # threads of the decoder graphs (one token per call); None = by model size (see
    # ``service.inference.session.decoder_thread_count``: 1 for small decoders, else all cores;
    # small decoders use all cores for batches of >= ``WIDE_DECODER_ROWS`` search rows)
    decoder_threads: int | None = Field(default=None, ge=1, le=256)
    # Ed25519 public key (PEM text, base64 of the raw 32 bytes, or a file path): when set, the
    # weights need a manifest.sig that verifies with it; None = no signature check
    manifest_public_key: str | None = None

    # --- auth ---
    auth_enabled: bool = False  # require an API key on /v1/* (health and metrics stay open)
    # accepted keys; env: comma-separated (CXR_API_KEYS=key1,key2)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # --- bounded work and micro-batching ---
    max_concurrency: int = Field(default=1, ge=1, le=64)  # engine batches at once (threads)
    # with max_concurrency >= 2: a call that starts alone runs on intra_op_threads, one that
    # starts beside another on one thread (service.inference.core_sharing; weights loaded twice)
    share_cores: bool = False
    queue_size: int = Field(default=16, ge=1, le=10_000)  # requests waiting for the engine
    # wait up to this long for more requests to fill a batch; 0 = never wait
    batch_window_ms: float = Field(default=10.0, ge=0, le=1000)
    max_batch: int = Field(default=8, ge=1, le=64)  # images per engine call; 1 = no batching
    # queue wait + engine time per request before a 504
    request_timeout_s: float = Field(default=60.0, gt=0, le=600)
    retry_after_s: int = Field(default=2, ge=1, le=3600)  # Retry-After of 503 responses, s
    # the whole request body must arrive within this (408 after); read before admission
    body_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # a new connection must send its request line and headers within this (else 408, closed)
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # memory the process may use, bytes (cxr_memory_limit_bytes, the memory alert's limit);
    # unset = the container's cgroup limit, else the host's physical memory
    memory_limit_bytes: int | None = Field(default=None, ge=1)

    # --- input limits ---
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)  # request body (413 above)
    max_pixels: int = Field(default=50_000_000, ge=1024)  # width * height (413 above)
    min_side: int = Field(default=32, ge=1)  # smallest accepted width or height, pixels
    # decoded images are downscaled once to this longest side (boxes stay in original pixels)
    working_max_side: int = Field(default=1024, ge=64, le=8192)
    max_phrases: int = Field(default=8, ge=1, le=64)  # phrases per /v1/ground request
    max_phrase_chars: int = Field(default=200, ge=1, le=2000)  # characters per phrase

    # --- decoding defaults and bounds ---
    default_beam_size: int = Field(default=3, ge=1, le=MAX_BEAM_SIZE)  # the release uses 3
    default_max_new_tokens: int = Field(default=100, ge=1)  # the release caps at 100 tokens
    max_new_tokens_limit: int = Field(default=200, ge=1, le=1000)  # largest accepted

    # --- heatmap defaults (query parameters override per request) ---
    heatmaps_default: bool = True  # return per-sentence heatmaps unless ?heatmaps=false
    heatmap_colormap_default: bool = False  # grey PNG (False) or RGBA jet (True)
    # longest heatmap side, px (never upscaled): heatmaps are in original pixels up to this side
    heatmap_max_side: int = Field(default=2048, ge=8, le=8192)

    # --- logging ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # JSON logs to stderr

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """Accept ``"k1,k2"`` (env) as well as a list."""
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        """Cross-field rules; each message says how to fix the configuration."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.auth_enabled and not keys:
            raise ValueError("CXR_AUTH_ENABLED=true needs at least one key in CXR_API_KEYS")
        if any(len(k) < 16 or not k.isprintable() or " " in k for k in keys):
            raise ValueError("each API key must be 16+ printable characters without spaces")
        if self.share_cores and self.max_concurrency < 2:
            raise ValueError("CXR_SHARE_CORES=true needs CXR_MAX_CONCURRENCY >= 2 (e.g. the cores)")
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds "
                f"max_new_tokens_limit ({self.max_new_tokens_limit})"
            )
        if self.min_side * self.min_side > self.max_pixels:
            raise ValueError("min_side**2 exceeds max_pixels: no image could be accepted")
        return self

    @property
    def batch_window_s(self) -> float:
        """The micro-batching window in seconds."""
        return self.batch_window_ms / 1000.0


def get_settings() -> Settings:
    """Settings from the environment and ``.env`` (a fresh instance each call)."""
    return Settings()
