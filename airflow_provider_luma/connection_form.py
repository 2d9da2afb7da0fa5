"""
The Luma connection form and the docs tables of its extras, built from the settings table.

The form shows the standard fields a user fills in (API key, host, port) and, as fields of their
own, the *common* settings of :mod:`airflow_provider_luma.settings_table`; the advanced ones are set
in the extra JSON and documented. Airflow 3.2+ builds the form from the provider info
(:func:`provider_connection_form`: ``ui-field-behaviour`` and ``conn-fields``); older versions call
``LumaHook.get_ui_field_behaviour()`` (:func:`ui_field_behaviour`) and
``LumaHook.get_connection_form_widgets()`` (:func:`connection_form_widgets`).

No field has a default value: Airflow's UI writes each field's value into the extra it saves, so a
default would be stored as if the user had set it. Imports nothing heavy: the provider manager reads
this module while Airflow starts (the form widgets import WTForms only when called).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_luma.settings_table import DEFAULT_HOST, SETTINGS, Setting

__all__ = [
    "DEFAULT_HOST",
    "FORM_SETTINGS",
    "connection_form_widgets",
    "docs_tables",
    "provider_connection_form",
    "replace_docs_tables",
    "ui_field_behaviour",
]

#: The settings shown as fields of the form, in their order.
FORM_SETTINGS: tuple[Setting, ...] = tuple(setting for setting in SETTINGS if setting.common)
#: Standard fields the form hides. The port stays: Airflow 3's Test button needs a stored port.
HIDDEN_FIELDS = ("schema", "login")
RELABELING = {"password": "API key"}
PLACEHOLDERS = {
    "host": DEFAULT_HOST,
    "password": "your AI/ML API key",
    "port": "443 (for the Test button of Airflow 3)",
}
#: The JSON schema type of each kind of setting.
_JSON_TYPES = {
    "seconds": "number",
    "number": "number",
    "whole": "integer",
    "flag": "boolean",
    "choice": "string",
    "family": "string",
    "hosts": "array",
    "conn_id": "string",
}


def _description(setting: Setting) -> str:
    """The form's description of a field: plain text (the form shows no Markdown)."""
    return f"{setting.help} Default: {setting.shown_default}.".replace("`", "")


def field_schema(setting: Setting) -> dict[str, Any]:
    """
    The JSON schema of a form field: nullable (empty means the default), with no ``default`` (it
    would be saved as set) and no ``null`` among the choices (a select would show it as a value).
    """
    schema: dict[str, Any] = {"type": [_JSON_TYPES[setting.kind], "null"]}
    if setting.minimum is not None:
        schema["minimum"] = setting.minimum
    if setting.maximum is not None:
        schema["maximum"] = setting.maximum
    if setting.choices:
        schema["enum"] = list(setting.choices)
    if setting.kind == "hosts":
        schema["items"] = {"type": "string"}
    return schema


def provider_connection_form() -> dict[str, Any]:
    """The form as the provider info declares it (``ui-field-behaviour`` and ``conn-fields``, Airflow 3.2+)."""
    return {
        "ui-field-behaviour": {
            "hidden-fields": list(HIDDEN_FIELDS),
            "relabeling": dict(RELABELING),
            "placeholders": dict(PLACEHOLDERS),
        },
        "conn-fields": {
            setting.name: {
                "label": setting.label,
                "schema": field_schema(setting),
                "description": _description(setting),
            }
            for setting in FORM_SETTINGS
        },
    }


def ui_field_behaviour() -> dict[str, Any]:
    """The form as ``get_ui_field_behaviour()`` returns it (Airflow 2.11 to 3.1)."""
    advanced = {setting.name: setting.default for setting in SETTINGS if setting.name in ("timeout", "max_retries")}
    return {
        "hidden_fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": {
            **PLACEHOLDERS,
            # Airflow 2.11's form shows these in the fields of connection_form_widgets().
            **{setting.name: setting.shown_default for setting in FORM_SETTINGS},
            "extra": json.dumps(advanced),
        },
    }


def connection_form_widgets() -> dict[str, Any]:
    """
    The form fields of the common settings as ``get_connection_form_widgets()`` returns them (Airflow
    2.11 to 3.1). All are text fields: Airflow 2.11's form leaves an empty text field out of the extra,
    where an empty number field would be saved as ``null``; the settings read numbers given as text.

    Without WTForms (Airflow 3.0 and 3.1 installed without Flask AppBuilder) there are none: Airflow
    builds these fields from WTForms classes only, and an ``ImportError`` here would make its provider
    manager drop ``get_ui_field_behaviour()`` as well (``providers_manager.py``, ``_import_hook``).
    """
    try:
        from wtforms import StringField
        from wtforms.validators import Optional
    except ImportError:
        return {}
    try:  # Flask AppBuilder's look, where it is installed (Airflow 2.11 always has it)
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
    except ImportError:
        looks: dict[str, Any] = {}
        label: Any = str
    else:
        looks = {"widget": BS3TextFieldWidget()}
        label = lazy_gettext
    return {
        setting.name: StringField(
            label(setting.label), description=_description(setting), validators=[Optional()], **looks
        )
        for setting in FORM_SETTINGS
    }


def docs_tables() -> str:
    """The tables of ``docs/connection.md`` listing every extra: the form's, then the advanced ones."""

    def table(settings: tuple[Setting, ...]) -> list[str]:
        rows = ["| extra | default | accepts | what it does |", "|---|---|---|---|"]
        for setting in settings:
            default = setting.shown_default
            shown = f"`{default}`" if setting.default_text is None else default
            rows.append(f"| `{setting.name}` | {shown} | {setting.accepts} | {setting.help} |")
        return rows

    advanced = tuple(setting for setting in SETTINGS if not setting.common)
    lines = [
        "In the connection form:",
        "",
        *table(FORM_SETTINGS),
        "",
        "Advanced (not in the form: set them in the extra JSON):",
        "",
        *table(advanced),
    ]
    return "\n".join(lines) + "\n"


#: The lines around the generated tables in ``docs/connection.md``.
DOCS_BEGIN = "<!-- extras tables: generated from airflow_provider_luma/settings_table.py by scripts/docs_tables.py -->"
DOCS_END = "<!-- end of the extras tables -->"


def replace_docs_tables(page: str) -> str:
    """``page`` (the text of ``docs/connection.md``) with its generated tables made anew."""
    before, begin, rest = page.partition(DOCS_BEGIN)
    _, end, after = rest.partition(DOCS_END)
    if not begin or not end:
        raise ValueError(f"the page has no {DOCS_BEGIN!r} ... {DOCS_END!r} block")
    return f"{before}{DOCS_BEGIN}\n{docs_tables()}{DOCS_END}{after}"
