from pathlib import Path

import pytest

from core.base.settings import Settings, SettingsError, load_settings, read_secrets


def test_defaults_need_no_configuration() -> None:
    s = load_settings(environ={}, secrets={})
    assert s.model_id == "google/gemma-3-4b-it"
    assert s.quantization == "4bit"
    assert s.database_url == f"sqlite:///{Path('data') / 'refsheet.db'}"
    assert s.max_upload_bytes == 20 * 1024 * 1024


def test_environment_wins_over_secrets_file(tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text('REFSHEET_MODEL = "from-secrets"\nHF_TOKEN = "hf_secret"\nREFSHEET_MAX_UPLOAD_MB = 5\n')
    secrets = read_secrets((secrets_file,))
    s = load_settings(environ={"REFSHEET_MODEL": "/models/gemma"}, secrets=secrets)
    assert s.model_id == "/models/gemma"
    assert s.hf_token == "hf_secret"
    assert s.max_upload_mb == 5.0
    assert "hf_secret" not in repr(s)  # tokens never end up in logs
    keyed = load_settings(environ={"REFSHEET_API_KEY": "sk-planted"}, secrets={})
    assert keyed.api_key == "sk-planted" and "sk-planted" not in repr(keyed)


def test_data_dir_sets_default_database(tmp_path: Path) -> None:
    s = load_settings(environ={"REFSHEET_DATA_DIR": str(tmp_path)}, secrets={})
    assert s.database_url == f"sqlite:///{tmp_path / 'refsheet.db'}"
    s = load_settings(environ={"DATABASE_URL": "postgresql://u@h/db"}, secrets={})
    assert s.database_url == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REFSHEET_QUANTIZATION": "3bit"}, "REFSHEET_QUANTIZATION must be one of 4bit, 8bit, none"),
        ({"REFSHEET_MAX_UPLOAD_MB": "lots"}, "REFSHEET_MAX_UPLOAD_MB must be a number"),
        ({"REFSHEET_MAX_PIXELS": "0"}, "REFSHEET_MAX_PIXELS must be positive"),
        ({"REFSHEET_DEVICE": "tpu"}, "REFSHEET_DEVICE must be one of"),
        ({"REFSHEET_BACKEND": "ollama"}, "REFSHEET_BACKEND must be one of local, openai"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=env, secrets={})


def test_with_changes_one_value() -> None:
    assert Settings().with_(quantization="none").quantization == "none"


def test_streamlit_config_never_phones_home_and_lets_oversized_files_reach_the_app() -> None:
    import tomllib

    from tests.conftest import ROOT

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
    # Streamlit's uploader silently drops a file over its ceiling (a red "!" and nothing else), so
    # the ceiling sits well above the app's own limit: a 27 MB sheet reaches the app, which says
    # "27 MB; the limit is 20 MB" (the browser test uploads one).
    assert config["server"]["maxUploadSize"] >= 5 * load_settings(environ={}, secrets={}).max_upload_mb
