"""The connection form as each Airflow builds it from the provider, what it saves, and the Test button."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from airflow.models import Connection

import airflow_provider_luma
from airflow_provider_luma.connection_form import FORM_SETTINGS, field_schema
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.hooks.settings import LumaSettings
from airflow_provider_luma.settings_table import SETTINGS
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY
from tests.support.deployment import AirflowDeployment, airflow_version, deployment_env, free_port

#: The fields of the form beside the standard ones: the settings a user sets (issue 21).
FORM_FIELDS = ["max_calls_per_second", "max_call_burst", "video_hosts", "poll_interval"]


def declared_connection_type() -> dict[str, Any]:
    (conn_type,) = airflow_provider_luma.get_provider_info()["connection-types"]
    return conn_type


def test_the_form_shows_the_common_settings_and_nothing_pre_filled():
    conn_type = declared_connection_type()
    assert list(conn_type["conn-fields"]) == FORM_FIELDS == [setting.name for setting in FORM_SETTINGS]
    for name, field in conn_type["conn-fields"].items():
        schema = field["schema"]
        assert "default" not in schema, f"{name}: Airflow's UI would save a default as if the user had set it"
        assert "null" in schema["type"], f"{name}: a type without null makes the field required"
        assert None not in schema.get("enum", []), f"{name}: a select shows a null choice as 'null'"
        assert field["label"]
        assert "Default: " in field["description"]
        assert "`" not in field["description"]
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["hidden-fields"] == ["schema", "login"]  # the port stays: the Test button needs it stored
    assert behaviour["relabeling"] == {"password": "API key"}
    assert conn_type["hook-name"] == LumaHook.hook_name


def test_a_select_would_offer_only_real_choices():
    # No choice is in the form today; one that comes must not offer (or show) null.
    for setting in SETTINGS:
        if setting.choices:
            assert field_schema(setting)["enum"] == list(setting.choices)


def test_both_airflow_form_apis_say_the_same():
    declared, python = declared_connection_type()["ui-field-behaviour"], LumaHook.get_ui_field_behaviour()
    assert python["hidden_fields"] == declared["hidden-fields"]
    assert python["relabeling"] == declared["relabeling"]
    assert {k: v for k, v in python["placeholders"].items() if k in declared["placeholders"]} == declared[
        "placeholders"
    ]
    # Airflow 2.11 shows a placeholder in each extra field: the default; and one advanced example in the JSON box.
    assert {k: python["placeholders"][k] for k in FORM_FIELDS} == {s.name: s.shown_default for s in FORM_SETTINGS}
    advanced = json.loads(python["placeholders"]["extra"])
    assert advanced
    assert not set(advanced) & set(FORM_FIELDS)
    assert LumaSettings.from_connection(Connection(conn_id="x", password=SENTINEL_KEY), advanced) == LumaSettings(
        conn_id="x", base_url="https://api.aimlapi.com", api_key=SENTINEL_KEY
    ), "the example shows the defaults"


# -- what Airflow itself makes of the form, on each version -------------------------------------------

#: Run in a fresh interpreter (the provider manager is a process-wide singleton, and Airflow 3.0 puts
#: mocks of WTForms into sys.modules): prints the Luma form as the API server (3.x) or the Flask
#: AppBuilder view (2.11) gets it from Airflow's own provider manager.
READ_FORM = """
import json
try:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
except ImportError:  # Airflow 2
    from airflow.providers_manager import ProvidersManager
    manager = ProvidersManager()
    widgets = {key: type(w.field).__name__ + ":" + w.field.field_class.__name__
               for key, w in manager.connection_form_widgets.items() if key.startswith("extra__luma__")}
    print(json.dumps({"widgets": widgets, "behaviour": manager.field_behaviours["luma"]}))
else:
    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "luma"]
    print(json.dumps(meta.model_dump(mode="json")))
"""


def airflow_json(code: str) -> Any:
    """What ``code`` prints last (JSON), run by this interpreter with the tests' Airflow home."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_airflows_provider_manager_builds_the_form_of_the_common_fields(airflow_db):
    form = airflow_json(READ_FORM)
    if airflow_version() < (3, 0):
        assert form["widgets"] == {f"extra__luma__{name}": "UnboundField:StringField" for name in FORM_FIELDS}
        assert form["behaviour"]["hidden_fields"] == ["schema", "login"]
        assert form["behaviour"]["placeholders"]["extra__luma__poll_interval"] == "10"
        return
    if airflow_version() < (3, 2) and importlib.util.find_spec("wtforms") is None:
        # Airflow 3.0/3.1 reads both Python methods only after importing WTForms (providers_manager.py,
        # _import_hook): without Flask AppBuilder installed no provider's form is customised at all.
        assert (form["standard_fields"], form["extra_fields"]) == (None, None)
        return
    standard = form["standard_fields"]
    assert standard["password"]["title"] == "API key"
    assert (standard["url_schema"]["hidden"], standard["login"]["hidden"], standard["port"]["hidden"]) == (
        True,
        True,
        False,
    )
    assert list(form["extra_fields"]) == FORM_FIELDS
    for name, field in form["extra_fields"].items():
        assert field["value"] is None, f"{name} would be pre-filled (and saved) with {field['value']!r}"
        assert "null" in field["schema"]["type"]
        assert field["description"].endswith(".")
    if airflow_version() >= (3, 2):  # the provider info: typed fields
        types = [form["extra_fields"][name]["schema"]["type"][0] for name in FORM_FIELDS]
        assert types == ["number", "integer", "array", "number"]
        assert form["extra_fields"]["poll_interval"]["schema"]["minimum"] == 2.0


#: A browser's post of Airflow 2.11's "Add Connection" form (every field, empty ones as ""), processed
#: by the Flask AppBuilder view as it does before saving; prints the extra it would store.
SAVE_211_FORM = """
import json
from werkzeug.datastructures import MultiDict
from airflow.www.app import create_app
from airflow.www.forms import create_connection_form_class
from airflow.www.views import ConnectionModelView

app = create_app(testing=True)
with app.test_request_context():
    form_class = create_connection_form_class()
    fields = {name: "" for name in dir(form_class) if name.startswith("extra__luma__")}
    typed = {"extra__luma__max_calls_per_second": "2.5",
             "extra__luma__video_hosts": "cdn.example.com, *.cdn.example.com"}
    post = {"conn_id": "luma_form", "conn_type": "luma", "password": "pw", "host": "", "port": "", "extra": "",
            **fields, **typed}
    form = form_class(formdata=MultiDict(post))
    (view,) = [v for v in app.appbuilder.baseviews if isinstance(v, ConnectionModelView)]
    view.process_form(form, True)
    print(json.dumps({"fields": sorted(fields), "extra": json.loads(form.extra.data)}))
"""


def test_airflow_2_11s_form_saves_only_what_the_user_typed(airflow_db):
    if airflow_version() >= (3, 0):
        pytest.skip("Airflow 3 has no Flask AppBuilder form; its React form is driven by the browser tests")
    saved = airflow_json(SAVE_211_FORM)
    assert saved["fields"] == sorted(f"extra__luma__{name}" for name in FORM_FIELDS)
    assert saved["extra"] == {"max_calls_per_second": "2.5", "video_hosts": "cdn.example.com, *.cdn.example.com"}
    settings = LumaSettings.from_connection(Connection(conn_id="luma_form", password=SENTINEL_KEY), saved["extra"])
    assert (settings.max_calls_per_second, settings.video_hosts) == (2.5, ("cdn.example.com", "*.cdn.example.com"))


# -- the Test button of Airflow 3.3, through a real API server ------------------------------------------


def api_call(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """``(status, JSON answer)`` of one call to the API server."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@contextmanager
def api_server() -> Iterator[tuple[AirflowDeployment, str]]:
    """Only Airflow's API server, with connection tests enabled and every user an admin; yields it and a token."""
    home = Path(tempfile.mkdtemp(prefix="luma-form-airflow-home-"))
    port = free_port()
    settings = {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    server = AirflowDeployment(home=home, env=deployment_env(home, port, settings), port=port)
    try:
        server.airflow("db", "migrate", timeout=180)
        server.start_component("api-server")
        deadline = time.monotonic() + 120
        while True:
            server.check_alive(["api-server"])
            try:
                if api_call(f"{server.api_url}/api/v2/monitor/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the API server did not start:\n{server.logs_tail()}"
            time.sleep(0.5)
        status, token = api_call(f"{server.api_url}/auth/token")
        assert status == 201, token
        yield server, token["access_token"]
    finally:
        server.stop()


def ui_test_body(stored: dict[str, Any]) -> dict[str, Any]:
    """The body Airflow 3.3.2's Test button posts for a connection of the list (``TestConnectionButton.tsx``)."""
    return {
        "conn_type": stored["conn_type"],
        "connection_id": stored["connection_id"],
        "description": stored["description"] or "",
        "extra": "{}" if stored["extra"] in ("", None) else stored["extra"],
        "host": stored["host"] or "",
        "login": stored["login"] or "",
        "password": stored["password"] or "",
        "port": stored["port"] or 0,  # Number(connection.port): Number(null) is 0
        "schema": stored["schema"] or "",
    }


@pytest.mark.deployment
@pytest.mark.timeout(300)
def test_the_test_button_works_for_a_connection_with_its_port_stored():
    if airflow_version() < (3, 3):
        pytest.skip("the Test button's port check is Airflow 3.3's (3.0.6 has no Test button in its UI)")
    simulator = LumaSimulator(api_key=SENTINEL_KEY)
    simulator.start()
    try:
        with api_server() as (server, token):
            status, meta = api_call(f"{server.api_url}/ui/connections/hook_meta", token=token)
            assert status == 200, meta
            (luma,) = [m for m in meta if m["connection_type"] == "luma"]
            assert list(luma["extra_fields"]) == FORM_FIELDS
            # What the 3.3.2 form saves for key + host only: every field's value (useParamStore.ts).
            form_extra = {name: field["value"] for name, field in luma["extra_fields"].items()}
            assert form_extra == dict.fromkeys(FORM_FIELDS)

            scheme_host, port = simulator.base_url.rsplit(":", 1)
            connections = {
                "luma_port_stored": {"host": scheme_host, "port": int(port), "extra": json.dumps(form_extra)},
                "luma_port_in_host": {"host": simulator.base_url},
            }
            answers = {}
            for conn_id, fields in connections.items():
                body = {"connection_id": conn_id, "conn_type": "luma", "password": SENTINEL_KEY, **fields}
                created = api_call(f"{server.api_url}/api/v2/connections", "POST", body, token)
                assert created[0] == 201, created
                status, stored = api_call(f"{server.api_url}/api/v2/connections/{conn_id}", token=token)
                assert status == 200, stored
                assert stored["password"] == "***"  # the list holds the masked key: the server uses the stored one
                answers[conn_id] = api_call(
                    f"{server.api_url}/api/v2/connections/test", "POST", ui_test_body(stored), token
                )
    finally:
        simulator.stop()
    assert answers["luma_port_stored"] == (
        200,
        {
            "status": True,
            "message": f"The Luma API at {simulator.base_url} accepted the key on the luma-ai and video endpoints.",
        },
    )
    # Airflow 3.3.2 refuses a connection with no stored port (the UI sends 0). When this fails, Airflow fixed
    # it: update docs/connection.md ("Airflow 3.3.2 needs a stored port") and this test.
    assert answers["luma_port_in_host"] == (
        400,
        {
            "detail": "The host or port to test differs from the stored connection. "
            "Include the credentials to test in the request body."
        },
    )


def test_a_stored_port_of_the_schemes_own_changes_no_url():
    def base_url(**fields: Any) -> str:
        conn = Connection(conn_id="p", conn_type="luma", password=SENTINEL_KEY, **fields)
        return LumaSettings.from_connection(conn, {}).base_url

    assert base_url(port=443) == base_url() == "https://api.aimlapi.com"
    assert base_url(host="https://proxy.example.com/luma", port=443) == "https://proxy.example.com/luma"
    assert base_url(host="https://proxy.example.com", port=8443) == "https://proxy.example.com:8443"
    assert base_url(host="http://127.0.0.1", port=80) == "http://127.0.0.1"
    assert base_url(host="http://127.0.0.1:8089", port=443) == "http://127.0.0.1:8089"  # the host's own wins
