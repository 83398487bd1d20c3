"""Settings: env prefix, comma-separated keys, cross-field validation, no import-time instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import service.settings as settings_module
from service.settings import Settings, get_settings

GOOD_KEY = "a-good-key-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests here must not see the CXR_* variables of the machine that runs them."""
    import os

    for name in [n for n in os.environ if n.startswith("CXR_")]:
        monkeypatch.delenv(name)


def test_defaults_and_factory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    s = get_settings()
    assert s.weights_dir == Path("weights") and s.provider == "auto"
    assert s.default_beam_size == 3 and not s.auth_enabled
    assert get_settings() is not s  # a factory, not a cached global
    assert not any(isinstance(v, Settings) for v in vars(settings_module).values())


def test_env_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CXR_MAX_BATCH=3\nCXR_QUEUE_SIZE=7\nUNRELATED=1\n")
    monkeypatch.setenv("CXR_AUTH_ENABLED", "true")
    monkeypatch.setenv("CXR_API_KEYS", f" {GOOD_KEY} , second-key-0123456789 ,")
    monkeypatch.setenv("CXR_PROVIDER", "cpu")
    monkeypatch.setenv("CXR_LOG_LEVEL", "debug")
    s = get_settings()
    assert (s.max_batch, s.queue_size, s.provider, s.log_level) == (3, 7, "cpu", "DEBUG")
    assert [k.get_secret_value() for k in s.api_keys] == [GOOD_KEY, "second-key-0123456789"]
    assert GOOD_KEY not in repr(s)  # keys are secrets


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"auth_enabled": True}, "CXR_API_KEYS"),
        ({"api_keys": "short"}, "16+"),
        ({"default_max_new_tokens": 300}, "max_new_tokens_limit"),
        ({"default_beam_size": 6}, "less than or equal"),
        ({"provider": "tpu"}, "auto"),
        ({"batch_window_ms": -1}, "greater than or equal"),
        ({"queue_size": 0}, "greater than or equal"),
        ({"min_side": 2000, "max_pixels": 1024}, "min_side"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **kwargs)


def test_window_seconds():
    assert Settings(_env_file=None, batch_window_ms=25).batch_window_s == pytest.approx(0.025)


@pytest.mark.parametrize(
    "env",
    [
        {"CXR_API_KEYS": f"short,{GOOD_KEY}"},  # the model validator: the whole input dict
        {"CXR_API_KEYS": f"{GOOD_KEY},has space here"},
        {"CXR_API_KEYS": GOOD_KEY, "CXR_MAX_BATCH": "not-a-number"},  # a field error beside it
        {"CXR_API_KEYS": GOOD_KEY, "CXR_PROVIDER": GOOD_KEY},  # the value itself is secret
    ],
)
def test_validation_errors_never_echo_input_values(monkeypatch, tmp_path, env):
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        get_settings()
    shown = f"{info.value}\n{info.value!r}"
    assert "input_value" not in shown
    for fragment in (GOOD_KEY, GOOD_KEY[:8], GOOD_KEY[-8:], "not-a-number", "has space"):
        assert fragment not in shown, fragment


def test_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`CXR_HEATMAP_MAX_SIDE=` in an env file (or passed empty by compose) is the default."""
    from service.settings import Settings

    monkeypatch.setenv("CXR_HEATMAP_MAX_SIDE", "")
    assert Settings().heatmap_max_side == 2048
