"""The provider as Airflow sees it: entry point, provider info, CLI listing, connection URI form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import airflow_provider_luma
from airflow_provider_luma.hooks.luma import LumaHook
from tests.support.connection import SENTINEL_KEY


def test_entry_point_gives_the_provider_info():
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_provider_luma")]
    info = entry.load()()
    assert info["package-name"] == "airflow-provider-luma"
    assert info["versions"] == [airflow_provider_luma.__version__]
    (conn_type,) = info["connection-types"]
    assert conn_type["hook-class-name"] == "airflow_provider_luma.hooks.luma.LumaHook"
    behaviour = conn_type["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == set(LumaHook.get_ui_field_behaviour()["hidden_fields"])
    assert behaviour["relabeling"] == LumaHook.get_ui_field_behaviour()["relabeling"]


def test_every_module_named_in_the_provider_info_imports():
    info = airflow_provider_luma.get_provider_info()
    for section in ("hooks", "triggers", "sensors", "operators"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                __import__(module)


def airflow_cli(*args: str) -> str:
    """What ``airflow <args>`` prints, run by this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=180,
        check=True,
    ).stdout


def test_airflow_cli_lists_the_provider_and_its_hook():
    assert "airflow-provider-luma" in airflow_cli("providers", "list", "-o", "json")
    hooks = airflow_cli("providers", "hooks", "-o", "json")
    # Log lines may come first (Airflow 3.0 prints some): the JSON list starts at '[{'.
    assert any(row.get("connection_type") == "luma" for row in json.loads(hooks[hooks.index("[{") :]))


def test_uri_form_of_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", f"luma://:{SENTINEL_KEY}@127.0.0.1:8089/http")
    assert LumaHook().settings.base_url == "http://127.0.0.1:8089"
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", f"luma://:{SENTINEL_KEY}@api.aimlapi.com")
    assert LumaHook().settings.base_url == "https://api.aimlapi.com"


# -- the connection form: one definition, and a test that it never drifts -------------------------


class RecordingExtras(dict):
    """Extras that remember which keys were read."""

    def __init__(self, **values):
        super().__init__(**values)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def settings_from(**extras):
    from airflow.models import Connection

    from airflow_provider_luma.hooks.settings import LumaSettings

    conn = Connection(conn_id="form", conn_type="luma", host="http://127.0.0.1:1", password=SENTINEL_KEY)
    return LumaSettings.from_connection(conn, RecordingExtras(**extras))


def test_the_settings_read_exactly_the_extras_of_the_form_with_their_defaults():
    from airflow.models import Connection

    from airflow_provider_luma.connection_form import EXTRAS
    from airflow_provider_luma.hooks.settings import LumaSettings

    extras = RecordingExtras()
    conn = Connection(conn_id="form", conn_type="luma", host="http://127.0.0.1:1", password=SENTINEL_KEY)
    settings = LumaSettings.from_connection(conn, extras)
    assert extras.read == {extra.name for extra in EXTRAS}
    for extra in EXTRAS:
        if extra.name == "allow_insecure_http":
            continue  # read, not kept: it only decides whether the host is accepted
        value = getattr(settings, extra.name)
        assert (value or None) == (extra.default or None), extra.name


def test_the_settings_enforce_the_forms_minimums_and_choices():
    import pytest

    from airflow_provider_luma.connection_form import EXTRAS
    from airflow_provider_luma.errors import LumaConfigurationError

    for extra in EXTRAS:
        if extra.minimum is not None:
            settings_from(**{extra.name: extra.minimum})
            below = extra.minimum - (1 if extra.kind == "integer" else extra.minimum / 2 or 0.01)
            with pytest.raises(LumaConfigurationError, match=extra.name):
                settings_from(**{extra.name: below})
        for choice in extra.choices:
            settings_from(**{extra.name: choice})
        if extra.choices:
            with pytest.raises(LumaConfigurationError, match=extra.name):
                settings_from(**{extra.name: "bogus"})


def test_both_forms_of_the_connection_form_say_the_same():
    from airflow_provider_luma.connection_form import EXTRAS

    (conn_type,) = airflow_provider_luma.get_provider_info()["connection-types"]
    declared, python = conn_type["ui-field-behaviour"], LumaHook.get_ui_field_behaviour()
    assert declared["hidden-fields"] == python["hidden_fields"]
    assert declared["relabeling"] == python["relabeling"]
    assert {k: v for k, v in python["placeholders"].items() if k != "extra"} == declared["placeholders"]
    assert set(json.loads(python["placeholders"]["extra"])) <= set(conn_type["conn-fields"])
    assert list(conn_type["conn-fields"]) == [extra.name for extra in EXTRAS]
    assert conn_type["hook-name"] == LumaHook.hook_name
