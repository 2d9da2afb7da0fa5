"""The settings table: every extra read from it, with its defaults, bounds and messages; unknown extras."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import fields
from typing import Any

import pytest
from airflow.models import Connection

from airflow_provider_luma.errors import LumaConfigurationError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.settings import SETTINGS_CACHE, LumaSettings
from airflow_provider_luma.models import ApiFamily
from airflow_provider_luma.settings_table import SETTING, SETTINGS, Setting
from airflow_provider_luma.waiting import PACING_FLOORS, WaitPacing
from tests.support.connection import SENTINEL_KEY

#: A value of each setting other than its default, as a user writes it, and as the settings hold it.
SET_VALUES: dict[str, tuple[Any, Any]] = {
    "max_calls_per_second": ("2.5", 2.5),
    "max_call_burst": (3, 3),
    "video_hosts": ("cdn.example.com, *.videos.example.com", ("cdn.example.com", "*.videos.example.com")),
    "poll_interval": (4, 4.0),
    "timeout": ("90", 90.0),
    "connect_timeout": (2.5, 2.5),
    "max_retries": ("0", 0),
    "ids_per_request": (3.0, 3),
    "comma_separated_ids": ("yes", True),
    "min_poll_interval": (0.5, 0.5),
    "max_backoff": (5, 5.0),
    "api": ("VIDEO", ApiFamily.VIDEO),
    "long_poll_hold": (20, 20.0),
    "single_hold_param": ("status", "status"),
    "multi_hold_param": ("none", "none"),
    "allow_insecure_http": (True, True),
    "max_video_bytes": ("1024", 1024),
    "allow_private_video_hosts": ("1", True),
    "budget_redis_conn_id": (" redis_default ", "redis_default"),
}


def model_connection(conn_id: str = "table", **extra: Any) -> Connection:
    """A connection as Airflow's own model holds it (its extra stored as JSON text)."""
    return Connection(
        conn_id=conn_id, conn_type="luma", host="http://127.0.0.1:9", password=SENTINEL_KEY, extra=json.dumps(extra)
    )


def read(conn: Connection) -> LumaSettings:
    return LumaSettings.from_connection(conn, conn.extra_dejson)


def test_an_empty_extra_gives_the_tables_defaults_and_the_waits_own(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_TABLE_EMPTY", json.dumps({"conn_type": "luma", "password": SENTINEL_KEY}))
    settings = LumaHook(luma_conn_id="luma_table_empty").settings
    assert {f.name for f in fields(LumaSettings)} == {"conn_id", "base_url", "api_key", *SETTING}
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        assert value == setting.default or (value, setting.default) == (ApiFamily.LUMA_AI, "luma-ai"), setting.name
        declared = next(f for f in fields(LumaSettings) if f.name == setting.name).default
        assert declared == value, f"LumaSettings.{setting.name} defaults to {declared!r}, the table to {value!r}"
    assert type(settings.max_retries) is int
    assert type(settings.timeout) is float
    assert settings.api is ApiFamily.LUMA_AI
    # The wait's own defaults and floors are the connection's: one set of numbers.
    assert settings.pacing == WaitPacing()
    assert {name: SETTING[name].minimum for name in ("min_poll_interval", "poll_interval", "max_backoff")} == {
        name: PACING_FLOORS[name] for name in ("min_poll_interval", "poll_interval", "max_backoff")
    }


def test_every_setting_is_read_by_its_name_through_airflows_connection_model():
    assert set(SET_VALUES) == set(SETTING), "give each setting of the table a value here"
    settings = read(model_connection(**{name: given for name, (given, _) in SET_VALUES.items()}))
    for name, (_, expected) in SET_VALUES.items():
        assert getattr(settings, name) == expected, name
        assert type(getattr(settings, name)) is type(expected), name


def test_every_setting_is_read_from_an_environment_connection(monkeypatch):
    extra = {name: given for name, (given, _) in SET_VALUES.items()}
    monkeypatch.setenv(
        "AIRFLOW_CONN_LUMA_TABLE_ENV",
        json.dumps(
            {"conn_type": "luma", "host": "https://proxy.example.com", "password": SENTINEL_KEY, "extra": extra}
        ),
    )
    hook = LumaHook(luma_conn_id="luma_table_env")
    for settings in (hook.settings, asyncio.run(hook.asettings())):
        assert {name: getattr(settings, name) for name in SET_VALUES} == {n: v for n, (_, v) in SET_VALUES.items()}


def test_null_and_empty_text_mean_the_default_as_airflow_3s_form_saves_them():
    settings = read(model_connection(**dict.fromkeys(SETTING)))
    assert settings == read(model_connection())
    settings = read(model_connection(**dict.fromkeys(SETTING, "")))
    assert settings == read(model_connection())


def test_the_older_prefixed_names_are_read_too():
    # Airflow 2.11's Test button sends each form field as extra__luma__<name> and as <name>.
    settings = read(model_connection(extra__luma__max_calls_per_second="4", extra__luma__poll_interval=""))
    assert (settings.max_calls_per_second, settings.poll_interval) == (4.0, 10.0)
    assert read(model_connection(timeout=30.5, extra__luma__timeout=99)).timeout == 30.5


def _below(setting: Setting) -> float:
    assert setting.minimum is not None
    return setting.minimum - (1 if setting.kind == "whole" else max(setting.minimum / 2, 0.01))


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.minimum is not None], ids=lambda s: s.name)
def test_each_number_keeps_its_bounds_with_a_message_naming_it(setting):
    read(model_connection(**{setting.name: setting.minimum}))
    with pytest.raises(
        LumaConfigurationError, match=rf"^Extra '{setting.name}' of connection 'table' must be at least"
    ):
        read(model_connection(**{setting.name: _below(setting)}))
    with pytest.raises(LumaConfigurationError, match=rf"^Extra '{setting.name}' of connection 'table' is 'soon'"):
        read(model_connection(**{setting.name: "soon"}))
    if setting.maximum is not None:
        read(model_connection(**{setting.name: setting.maximum}))
        with pytest.raises(
            LumaConfigurationError, match=rf"^Extra '{setting.name}' .* must be at most {setting.maximum:g}"
        ):
            read(model_connection(**{setting.name: setting.maximum * 2}))


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.choices], ids=lambda s: s.name)
def test_each_choice_is_kept_with_a_message_listing_them(setting):
    for choice in setting.choices:
        assert getattr(read(model_connection(**{setting.name: choice.upper()})), setting.name) == choice
    with pytest.raises(LumaConfigurationError) as raised:
        read(model_connection(**{setting.name: "bogus"}))
    assert str(raised.value).startswith(f"Extra '{setting.name}' of connection 'table' is 'bogus': use one of ")
    assert all(choice in str(raised.value) for choice in setting.choices)


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind == "flag"], ids=lambda s: s.name)
def test_each_flag_says_what_it_expects(setting):
    with pytest.raises(LumaConfigurationError, match=rf"^Extra '{setting.name}' .* is 'maybe': expected true or false"):
        read(model_connection(**{setting.name: "maybe"}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["cdn.example.com", "*.videos.example.com"], ("cdn.example.com", "*.videos.example.com")),
        ("cdn.example.com,*.videos.example.com", ("cdn.example.com", "*.videos.example.com")),
        (["CDN.example.com.", ""], ("cdn.example.com",)),  # Airflow 3's text box: one per line, a blank last line
        ("['cdn.example.com', 'b.example.com']", ("cdn.example.com", "b.example.com")),  # 2.11 saves a list as text
        ([], ()),
    ],
)
def test_video_hosts_as_each_form_sends_them(value, expected):
    assert read(model_connection(video_hosts=value)).video_hosts == expected


@pytest.mark.parametrize("value", [["https://cdn/x"], "cdn.example.com/videos", [1], {"a": 1}, 7])
def test_video_hosts_refuse_what_is_no_host_name(value):
    with pytest.raises(LumaConfigurationError, match=r"^Extra 'video_hosts' .*: give a list of host names"):
        read(model_connection(video_hosts=value))


def _unknown_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "does not read" in r.getMessage()
    ]


def test_an_unknown_extra_gets_one_warning_per_connection_and_process(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    conn = {"conn_type": "luma", "host": "http://127.0.0.1:9", "password": SENTINEL_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_TYPO", json.dumps({**conn, "extra": {"max_call_per_second": 2}}))
    for _ in range(3):  # hooks of one process, the cache emptied (its entries expire) in between
        SETTINGS_CACHE.clear()
        hook = LumaHook(luma_conn_id="luma_typo")
        assert hook.settings.max_calls_per_second is None
        asyncio.run(hook.asettings())
    (warning,) = _unknown_warnings(caplog)
    assert warning.startswith(
        "Connection 'luma_typo' has extras the Luma provider does not read, ignored: 'max_call_per_second' "
        "(did you mean 'max_calls_per_second'?). The extras it reads: "
    )
    assert all(name in warning for name in SETTING)
    assert SENTINEL_KEY not in warning

    # Another connection, or this one with another unknown extra, is told again (once).
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_TYPO2", json.dumps({**conn, "extra": {"colour": "red"}}))
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_TYPO", json.dumps({**conn, "extra": {"time_out": 9}}))
    for conn_id in ("luma_typo2", "luma_typo2", "luma_typo", "luma_typo"):
        SETTINGS_CACHE.clear()
        _ = LumaHook(luma_conn_id=conn_id).settings
    _first, second, third = _unknown_warnings(caplog)
    assert "'colour'." in second
    assert "did you mean" not in second.split("The extras")[0]
    assert "'time_out' (did you mean 'timeout'?)" in third


def test_known_extras_and_their_prefixed_names_get_no_warning(caplog):
    caplog.set_level(logging.WARNING)
    read(model_connection("table_known", timeout=90, extra__luma__poll_interval="5", video_hosts=None))
    assert _unknown_warnings(caplog) == []
