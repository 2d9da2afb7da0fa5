"""The steps a person takes in Airflow 3.3's UI, as the browser tests (and scripts/screenshots) take them."""

from __future__ import annotations

import time
from typing import Any

from tests.support.browser import Browser


def open_luma_form(browser: Browser, api_url: str, conn_id: str) -> None:
    """Admin → Connections → Add Connection, the id typed and "Luma AI" chosen (its standard fields open)."""
    from selenium.webdriver.common.keys import Keys

    browser.open(f"{api_url}/connections")
    browser.click_text("Add Connection", tag="button")
    (conn_id_input,) = browser.wait_for(lambda: browser.css("input[name=connection_id]"), describe="the form")
    conn_id_input.send_keys(conn_id)
    (conn_type,) = browser.css("[role=dialog] input[role=combobox]")
    conn_type.send_keys("Luma AI")
    browser.wait_for(lambda: browser.xpath("//*[contains(@id, 'option') and normalize-space(.)='Luma AI']"))
    conn_type.send_keys(Keys.ENTER)
    browser.wait_for(lambda: browser.css("input[name=password]"), describe="the Luma fields")


def open_section(browser: Browser, name: str) -> None:
    """Open one of the form's sections ("Standard Fields", "Extra Fields", "Extra Fields JSON"); others close."""
    browser.click_text(name, tag="button")
    time.sleep(0.5)  # the opening animation


def form_fields(browser: Browser) -> list[tuple[str, str]]:
    """
    ``(label, help text)`` of each field the connection form has below the connection type, in order,
    open sections or closed (a closed section keeps its fields in the page, hidden).
    """
    fields = []
    for field in browser.css("[role=dialog] [data-scope=field][data-part=root]"):
        labels = [_text(label) for label in field.find_elements("css selector", "label")]
        labels = [label for label in labels if label]
        if not labels or labels[0].rstrip(" *") in {"Connection ID", "Connection Type"}:
            continue
        helps = [_text(h) for h in field.find_elements("css selector", "[data-part=helper-text]")]
        fields.append((labels[0].rstrip(" *"), " ".join(h for h in helps if h)))
    return fields


def fill(browser: Browser, name: str, value: str) -> None:
    """Type ``value`` into the form's input named ``name``."""
    (element,) = browser.css(f"[role=dialog] [name={name}]")
    element.send_keys(value)


def save_form(browser: Browser, conn_id: str) -> None:
    """Save, and wait for the connection's row in the list."""
    browser.click_text("Save", tag="button")
    browser.wait_for(lambda: not browser.css("[role=dialog]") and connection_row(browser, conn_id), describe="the row")


def connection_row(browser: Browser, conn_id: str) -> Any:
    """The list's row of ``conn_id`` (or ``None``)."""
    rows = browser.xpath(f"//tr[.//*[normalize-space(text())='{conn_id}']]")
    return rows[0] if rows else None


def press_test_button(browser: Browser, api_url: str, conn_id: str) -> str:
    """Click the row's **Test** button; the toast's text (title and message)."""
    browser.open(f"{api_url}/connections")
    row = browser.wait_for(lambda: connection_row(browser, conn_id), describe=f"the row of {conn_id}")
    row.find_element("css selector", "button[aria-label='Test Connection']").click()
    return str(
        browser.wait_for(
            lambda: next((t for t in map(_text, browser.css("[data-scope=toast]")) if t), None),
            describe="the Test result",
        )
    )


def task_links(browser: Browser, api_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
    """The task instance's Details tab: ``{button text: href}`` of its "Extra Links"."""
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    browser.open(f"{api_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}{mapped}/details")
    browser.wait_for_text("Extra Links")

    def links() -> dict[str, str]:
        found = browser.xpath("//*[normalize-space(text())='Extra Links']/following::a[@href][position() <= 12]")
        return {_text(a): a.get_attribute("href") for a in found if _text(a).startswith("Luma video")}

    return dict(browser.wait_for(links, describe="the task's links"))


def _text(element: Any) -> str:
    return " ".join(str(element.get_attribute("textContent") or "").split())
