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
