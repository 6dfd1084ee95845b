from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from api.db import engine_for
from api.kit.pagination import decode_cursor, encode_cursor
from api.settings import ConfigurationError, Settings, resolve_secret_key


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("TOLLGATE_"):
            monkeypatch.delenv(name)
    return monkeypatch


class TestSettings:
    def test_defaults_need_nothing(self, clean_env: pytest.MonkeyPatch):
        settings = Settings()
        assert (settings.host, settings.port) == ("127.0.0.1", 8080)
        assert settings.data_dir == Path(".tollgate")
        assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
        assert settings.resolved_database_url.endswith(".tollgate/tollgate.db")
        assert settings.redis_url is None
        assert settings.admin_token is None
        assert settings.allow_private_webhooks is False
        assert settings.providers["openai"].base_url == "https://api.openai.com/v1"
        assert settings.providers["anthropic"].api_key is None

    def test_environment_names_follow_the_spec(self, clean_env: pytest.MonkeyPatch):
        clean_env.setenv("TOLLGATE_PORT", "9999")
        clean_env.setenv("TOLLGATE_DATABASE_URL", "postgresql+psycopg://u@h/db")
        clean_env.setenv("TOLLGATE_OPENAI_API_KEY", "sk-x")
        clean_env.setenv("TOLLGATE_DEEPSEEK_BASE_URL", "http://127.0.0.1:1/")
        clean_env.setenv("TOLLGATE_ALLOW_PRIVATE_WEBHOOKS", "true")
        settings = Settings()
        assert settings.port == 9999
        assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"
        assert settings.providers["openai"].api_key == "sk-x"
        assert settings.providers["deepseek"].base_url == "http://127.0.0.1:1"
        assert settings.allow_private_webhooks is True

    def test_toml_config_file_with_env_winning(self, clean_env: pytest.MonkeyPatch, tmp_path: Path):
        config = tmp_path / "tollgate.toml"
        config.write_text('port = 7000\nhost = "0.0.0.0"\n')
        clean_env.setenv("TOLLGATE_CONFIG", str(config))
        clean_env.setenv("TOLLGATE_PORT", "7001")
        settings = Settings()
        assert (settings.host, settings.port) == ("0.0.0.0", 7001)

    async def test_database_pool_per_process(self, clean_env: pytest.MonkeyPatch):
        clean_env.setenv("TOLLGATE_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/db")
        clean_env.setenv("TOLLGATE_DATABASE_POOL_SIZE", "3")
        clean_env.setenv("TOLLGATE_DATABASE_MAX_OVERFLOW", "0")
        engine = engine_for(Settings())  # connects lazily: nothing listens there
        assert (engine.pool.size(), engine.pool._max_overflow) == (3, 0)  # type: ignore[attr-defined]
        await engine.dispose()
        clean_env.setenv("TOLLGATE_DATABASE_POOL_SIZE", "0")
        with pytest.raises(ValueError, match="database_pool_size"):
            Settings()

    def test_bad_value_is_refused(self, clean_env: pytest.MonkeyPatch):
        clean_env.setenv("TOLLGATE_PORT", "not-a-port")
        with pytest.raises(ValueError, match="port"):
            Settings()


class TestSecretKey:
    def test_generated_once_with_private_permissions(self, tmp_path: Path):
        settings = Settings(data_dir=tmp_path / "data")
        first = resolve_secret_key(settings)
        path = tmp_path / "data" / "secret_key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(first) >= 32
        assert resolve_secret_key(settings) == first

    def test_required_with_a_database_url(self, tmp_path: Path):
        settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://u@h/db")
        with pytest.raises(ConfigurationError, match="TOLLGATE_SECRET_KEY"):
            resolve_secret_key(settings)

    def test_explicit_key_must_be_long_enough(self, tmp_path: Path):
        with pytest.raises(ConfigurationError):
            resolve_secret_key(Settings(data_dir=tmp_path, secret_key="short"))
        assert resolve_secret_key(Settings(data_dir=tmp_path, secret_key="k" * 32)) == "k" * 32


class TestCursor:
    def test_round_trip(self):
        import uuid
        from datetime import UTC, datetime

        moment, item = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), uuid.uuid4()
        cursor = decode_cursor(encode_cursor(moment, item))
        assert (cursor.created_at, cursor.id) == (moment, item)

    @pytest.mark.parametrize("value", ["", "abc", "W10", "WyJ4IiwgInkiXQ"])
    def test_garbage_is_a_400_on_cursor(self, value: str):
        from api.errors import InvalidRequest

        with pytest.raises(InvalidRequest) as caught:
            decode_cursor(value)
        assert caught.value.param == "cursor"
