"""Settings: defaults for the embedded database, validation that names the variable, URL normalisation."""

import pytest

from corral.config import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(__import__("os").environ):
        if name.startswith("CORRAL_"):
            monkeypatch.delenv(name)


def test_defaults_are_embedded_sqlite_and_public_reads() -> None:
    settings = load_settings()
    assert settings.is_sqlite
    assert settings.database.drivername == "sqlite+aiosqlite"
    assert settings.public_reads is True
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_plain_postgres_url_gets_psycopg_and_password_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_DATABASE_URL", "postgresql://corral:s3cret@db:5432/corral")
    settings = load_settings()
    assert settings.database.drivername == "postgresql+psycopg"
    assert "s3cret" not in settings.database_display
    assert "s3cret" not in repr(settings.hub_token)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORRAL_PORT", "eighty"),
        ("CORRAL_PUBLIC_READS", "perhaps"),
        ("CORRAL_LOG_FORMAT", "xml"),
        ("CORRAL_DATABASE_URL", "oracle://x"),
        ("CORRAL_DATABASE_URL", "::not a url::"),
        ("CORRAL_PAGE_LIMIT_MAX", "0"),
        ("CORRAL_HUB_ENDPOINT", "ftp://mirror"),
        ("CORRAL_HUB_ENDPOINT", "https://bob:s3cret@mirror.internal"),
    ],
)
def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value).startswith(f"invalid setting {variable}:")
    assert "\n" not in str(raised.value)


def test_limit_max_below_default_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_PAGE_LIMIT_DEFAULT", "100")
    monkeypatch.setenv("CORRAL_PAGE_LIMIT_MAX", "10")
    with pytest.raises(SettingsError, match="CORRAL_PAGE_LIMIT_MAX"):
        load_settings()


def test_hub_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HUB_TOKEN", "hf_abcdef")
    settings = load_settings()
    assert settings.hub_token is not None
    assert "hf_abcdef" not in repr(settings)
    assert "hf_abcdef" not in str(settings)
    assert settings.hub_token.get_secret_value() == "hf_abcdef"
