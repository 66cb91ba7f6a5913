"""Settings from the environment: names, nesting, conversion, errors and secrets."""

from __future__ import annotations

import os

import pytest

from runtime_facts.config import IngestSettings, SecretStr, Settings
from runtime_facts.errors import ExitCode, Reason, UsageError
from runtime_facts.logs import LogSettings


def test_defaults_without_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("RUNTIME_FACTS")]:
        monkeypatch.delenv(name)
    settings = Settings.load()
    assert settings.home == "./var"
    assert settings.ingest == IngestSettings()
    assert settings.receipts.checkpoint_every == 100


def test_variables_convert_to_the_field_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__INGEST__WORKERS", "3")
    monkeypatch.setenv("runtime_facts__ingest__sealed", "true")  # names are case-blind
    monkeypatch.setenv("RUNTIME_FACTS__SCORE__WEIGHT_RUNTIME", "0.5")
    monkeypatch.setenv("RUNTIME_FACTS__OFFLINE__PUBLIC_KEY", "")
    monkeypatch.setenv("RUNTIME_FACTS__LOG__FORMAT", "json")  # another section's: ignored
    monkeypatch.setenv("RUNTIME_FACTS__NO_SUCH__KEY", "1")
    settings = Settings.load()
    assert (settings.ingest.workers, settings.ingest.sealed) == (3, True)
    assert settings.score.weight_runtime == 0.5
    assert settings.offline.public_key == ""


def test_a_section_as_one_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__SERVE", '{"port": 9000, "host": "0.0.0.0"}')
    monkeypatch.setenv("RUNTIME_FACTS__SERVE__HOST", "127.0.0.2")  # one key wins over the object
    settings = Settings.load()
    assert (settings.serve.port, settings.serve.host) == (9000, "127.0.0.2")


def test_home_variables_and_the_explicit_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_FACTS_HOME", raising=False)
    monkeypatch.setenv("RUNTIME_FACTS__HOME", "/second")
    assert Settings.load().home == "/second"
    monkeypatch.setenv("RUNTIME_FACTS_HOME", "/first")
    assert Settings.load().home == "/first"
    assert Settings.load("/given").home == "/given"


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("RUNTIME_FACTS__INGEST__WORKERS", "two", "Expected `int`, got `str`"),
        ("RUNTIME_FACTS__INGEST__SEALED", "maybe", "Expected `bool`, got `str`"),
        ("RUNTIME_FACTS__RECEIPTS__CHECKPOINT_EVERY", "0", "Expected `int` >= 1"),
        ("RUNTIME_FACTS__INGEST", "{not json", "not a JSON object"),
    ],
)
def test_a_value_that_does_not_convert_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, why: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as caught:
        Settings.load()
    assert caught.value.reason == Reason.INVALID_SETTING
    assert caught.value.exit_code == ExitCode.USAGE
    assert f"setting {name}: {why}" in str(caught.value)


def test_log_settings_have_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__LOG__FORMAT", "json")
    monkeypatch.setenv("RUNTIME_FACTS__LOG__LEVEL", "debug")
    assert LogSettings.load() == LogSettings(format="json", level="debug")
    monkeypatch.setenv("RUNTIME_FACTS__LOG__FORMAT", "xml")
    with pytest.raises(UsageError, match="RUNTIME_FACTS__LOG__FORMAT"):
        LogSettings.load()


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__AIRFLOW__PASSWORD", "hunter2")
    settings = Settings.load()
    assert settings.airflow.password == SecretStr("hunter2")
    assert settings.airflow.password is not None
    assert settings.airflow.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.to_dict())
    assert settings.to_dict()["airflow"]["password"] == "**********"


def test_replace_and_validate() -> None:
    ingest = IngestSettings().replace(max_line_bytes=100)
    assert ingest.max_line_bytes == 100
    assert IngestSettings.validate({**ingest.to_dict(), "workers": "4"}).workers == 4
