"""
Airflow 3.3's UI in headless Chromium, as a person meets the provider there: the Luma connection
form, saving a connection with a key and a host only, the **Test** button, the tasks' video links.

With ``LUMA_SCREENSHOTS=<folder>`` (``bash scripts/screenshots``) the tests also save the pictures
the docs show.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import airflow_ui as ui
from tests.support.browser import Browser
from tests.support.connection import SENTINEL_KEY
from tests.support.deployment import AirflowDeployment
from tests.support.examples import ExampleRuns

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(420)]

#: The Luma form's fields below the connection type, in order: the one list to change with the form.
EXPECTED_FIELDS = [
    "Description",
    "Host",
    "API key",
    "Port",
    "Call budget (calls per second)",
    "Call burst",
    "Video hosts",
    "Poll interval of the universal endpoint (s)",
]
#: Airflow's own fields, whose help Airflow gives (none) rather than the provider.
AIRFLOW_FIELDS = {"Description", "Host", "API key", "Port"}


def screenshot(browser: Browser, name: str, element: object = None) -> None:
    """Save a picture for the docs when ``$LUMA_SCREENSHOTS`` names a folder (scripts/screenshots)."""
    folder = os.environ.get("LUMA_SCREENSHOTS")
    if not folder:
        return
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if element is not None:
        element.screenshot(str(path))  # type: ignore[attr-defined]
    else:
        browser.screenshot(path)


def test_the_luma_form_shows_its_fields_with_help_texts(ui_deployment: AirflowDeployment, browser: Browser) -> None:
    ui.open_luma_form(browser, ui_deployment.api_url, "luma_form_check")
    (dialog,) = browser.css("[role=dialog]")
    screenshot(browser, "connection-form", dialog)
    fields = ui.form_fields(browser)
    assert [label for label, _ in fields] == EXPECTED_FIELDS
    assert [label for label, help_text in fields if label not in AIRFLOW_FIELDS and not help_text] == []
    placeholders = {e.get_attribute("name"): e.get_attribute("placeholder") for e in browser.css("[role=dialog] input")}
    assert placeholders["host"] == "https://api.aimlapi.com"
    assert placeholders["password"] == "your AI/ML API key"
    ui.open_section(browser, "Extra Fields")
    screenshot(browser, "connection-form-extras", dialog)


def test_a_connection_saved_with_key_and_host_only(ui_deployment: AirflowDeployment, browser: Browser) -> None:
    dep = ui_deployment
    ui.open_luma_form(browser, dep.api_url, "luma_from_form")
    ui.fill(browser, "host", dep.simulator.base_url)
    ui.fill(browser, "password", SENTINEL_KEY)
    ui.save_form(browser, "luma_from_form")

    ((conn_type, host, password, port, extra),) = dep.query(
        "SELECT conn_type, host, password, port, extra FROM connection WHERE conn_id = 'luma_from_form'"
    )
    assert (conn_type, host, password, port) == ("luma", dep.simulator.base_url, SENTINEL_KEY, None)
    saved = json.loads(extra or "{}")
    # Nothing the user did not set: Airflow's UI writes each empty extra field as null (the settings
    # helper's docs/connection.md says where); a null is an unset extra to the provider.
    assert {key: value for key, value in saved.items() if value is not None} == {}


def test_the_test_button_names_what_the_key_reaches(ui_deployment: AirflowDeployment, browser: Browser) -> None:
    dep = ui_deployment
    port = urlsplit(dep.simulator.base_url).port
    # Host and port stored apart, as Airflow 3.3.2's Test button needs (it sends a missing port as 0).
    dep.airflow(
        "connections", "add", "luma_tested", "--conn-type", "luma", "--conn-host", "127.0.0.1",
        "--conn-port", str(port), "--conn-schema", "http", "--conn-password", SENTINEL_KEY,
    )  # fmt: skip
    result = ui.press_test_button(browser, dep.api_url, "luma_tested")
    screenshot(browser, "test-button")
    assert result == (
        f"Test Connection SuccessfulThe Luma API at http://127.0.0.1:{port} accepted the key on the luma-ai and "
        "video endpoints."
    )


def test_the_test_button_says_use_http_for_a_plain_http_server(
    ui_deployment: AirflowDeployment, browser: Browser
) -> None:
    dep = ui_deployment
    port = urlsplit(dep.simulator.base_url).port
    # No scheme: https://, against the plain-http simulator (the luma://:key@127.0.0.1:PORT).
    dep.airflow(
        "connections", "add", "luma_no_scheme", "--conn-type", "luma", "--conn-host", "127.0.0.1",
        "--conn-port", str(port), "--conn-password", SENTINEL_KEY,
    )  # fmt: skip
    result = ui.press_test_button(browser, dep.api_url, "luma_no_scheme")
    assert result.startswith("Test Connection Failed")
    assert f"https://127.0.0.1:{port}" in result
    assert "write the host as http://" in result
    assert SENTINEL_KEY not in result


def test_the_sensor_links_to_its_video(
    ui_deployment: AirflowDeployment, browser: Browser, example_runs: ExampleRuns
) -> None:
    dep = ui_deployment
    run_id = example_runs.runs["luma_text_to_video"]
    video = dep.xcom("luma_text_to_video", run_id, "wait_for_video")["video_url"]
    assert video.startswith(dep.simulator.cdn_url)
    for task_id in ("wait_for_video", "generate", "download"):
        assert ui.task_links(browser, dep.api_url, "luma_text_to_video", run_id, task_id) == {"Luma video": video}


def test_a_fan_out_links_each_video(
    ui_deployment: AirflowDeployment, browser: Browser, example_runs: ExampleRuns
) -> None:
    dep = ui_deployment
    run_id = example_runs.runs["luma_fan_out"]
    videos = [g["video_url"] for g in dep.xcom("luma_fan_out", run_id, "wait_for_videos")]
    assert len(videos) == 3
    # One button per video; the seven more the sensor was given at parse time stay empty, and hidden.
    sensor = ui.task_links(browser, dep.api_url, "luma_fan_out", run_id, "wait_for_videos")
    screenshot(browser, "sensor-links")
    assert sensor == {"Luma video": videos[0], "Luma video 2": videos[1], "Luma video 3": videos[2]}
    ids = [g["id"] for g in dep.xcom("luma_fan_out", run_id, "wait_for_videos")]
    for index in range(3):
        generation_id = dep.xcom("luma_fan_out", run_id, "generate", key="generation_id", map_index=index)
        links = ui.task_links(browser, dep.api_url, "luma_fan_out", run_id, "generate", map_index=index)
        assert links == {"Luma video": videos[ids.index(generation_id)]}
