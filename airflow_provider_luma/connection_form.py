"""
The Luma connection form, written once: the fields Airflow shows, their labels and placeholders, and
every extra :class:`~airflow_provider_luma.hooks.settings.LumaSettings` reads.

Airflow 3.2+ builds the form from the provider info (``conn-fields``, ``ui-field-behaviour``);
older versions call ``LumaHook.get_ui_field_behaviour()``. Both come from here, and a test checks
that the settings read exactly these extras with these defaults. Imports nothing heavy: the
provider manager reads it while Airflow starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DEFAULT_HOST = "https://api.aimlapi.com"


@dataclass(frozen=True)
class Extra:
    """
    One extra of the connection.

    :param name: Its key in the connection's extra JSON.
    :param label: The form's label.
    :param kind: ``number``, ``integer``, ``boolean``, ``string`` or ``array`` (JSON schema types).
    :param default: What applies when unset (``None``: nothing, or found out at run time).
    :param description: One sentence for the form.
    :param minimum: The least value the settings accept (numbers).
    :param choices: The values the settings accept (strings).
    """

    name: str
    label: str
    kind: str
    default: Any
    description: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the form field (nullable: unset means the default)."""
        schema: dict[str, Any] = {"type": [self.kind, "null"]}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.choices:
            schema["enum"] = [*self.choices, None]
        if self.kind == "array":
            schema["items"] = {"type": "string"}
        return schema


EXTRAS: tuple[Extra, ...] = (
    Extra("timeout", "Request timeout (s)", "number", 60.0,
          "Read time-out of one call; keep it above the API's 30 s hold.", minimum=1.0),
    Extra("connect_timeout", "Connect timeout (s)", "number", 10.0,
          "Seconds to establish a connection.", minimum=0.1),
    Extra("max_retries", "Retries per call", "integer", 5,
          "Retries after 429, 5xx and dropped connections.", minimum=0),
    Extra("ids_per_request", "Ids per multi-fetch call", "integer", 6,
          "How many generation ids one multi-fetch call carries.", minimum=1),
    Extra("comma_separated_ids", "Comma-separated ids", "boolean", False,
          "Send generation_ids=A,B instead of generation_ids[]=A&generation_ids[]=B."),
    Extra("min_poll_interval", "Least seconds between long polls", "number", 5.0,
          "Spacing of long polls a server answers early.", minimum=0.05),
    Extra("poll_interval", "Poll interval of the universal endpoint (s)", "number", 10.0,
          "Seconds between two polls of the universal endpoint, which holds no request.", minimum=2.0),
    Extra("max_backoff", "Longest back-off (s)", "number", 60.0,
          "Cap of a wait's back-off after failed polls.", minimum=0.1),
    Extra("api", "Endpoint family of bare ids", "string", "luma-ai",
          "Where a bare generation id lives: luma-ai or video (the universal endpoint).",
          choices=("luma-ai", "video")),
    Extra("long_poll_hold", "Server hold (s)", "number", 30.0,
          "How long the server holds a long poll; an answer far sooner was not held.", minimum=0.1),
    Extra("single_hold_param", "Long-poll parameter, single fetch", "string", None,
          "Pin it (state, status or none); unset: found out.", choices=("state", "status", "none")),
    Extra("multi_hold_param", "Long-poll parameter, multi fetch", "string", None,
          "Pin it (state, status or none); unset: found out.", choices=("state", "status", "none")),
    Extra("allow_insecure_http", "Allow plain http to a remote host", "boolean", False,
          "Sends the key in clear text: only for trusted networks."),
    Extra("max_video_bytes", "Largest video (bytes)", "integer", 2 * 1024**3,
          "A download above this fails.", minimum=1),
    Extra("allow_private_video_hosts", "Allow private video hosts", "boolean", False,
          "Download videos from loopback and private addresses too."),
    Extra("video_hosts", "Video hosts", "array", None,
          "The only host names videos are downloaded from (*.example.com matches sub-domains)."),
    Extra("max_calls_per_second", "Call budget (calls/s per process)", "number", None,
          "Most API calls per second from one process with this key (a triggerer's waits, a worker's "
          "tasks); unset: no budget. On a 429 every call on the key pauses.", minimum=0.1),
    Extra("max_call_burst", "Call burst", "integer", None,
          "Calls beyond that rate that may go at once; no second holds more than rate + burst "
          "calls. Unset: 0.", minimum=0),
    Extra("budget_redis_conn_id", "Shared call budget: Redis connection id", "string", None,
          "A redis connection (e.g. Celery's broker): every process using this key shares one call "
          "budget there. Unset: each process keeps its own."),
)  # fmt: skip

HIDDEN_FIELDS = ("schema", "port", "login")
RELABELING = {"password": "API key"}
PLACEHOLDERS = {"host": DEFAULT_HOST, "password": "your AI/ML API key"}
#: The extras the placeholder of the JSON box shows, with their defaults.
_EXAMPLE_EXTRAS = ("timeout", "max_retries", "api")


def ui_field_behaviour() -> dict[str, Any]:
    """The form as ``get_ui_field_behaviour()`` returns it (Airflow 2.11 to 3.1)."""
    example = {extra.name: extra.default for extra in EXTRAS if extra.name in _EXAMPLE_EXTRAS}
    return {
        "hidden_fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": {**PLACEHOLDERS, "extra": json.dumps(example)},
    }


def provider_connection_form() -> dict[str, Any]:
    """The form as the provider info declares it (``ui-field-behaviour`` and ``conn-fields``, Airflow 3.2+)."""
    return {
        "ui-field-behaviour": {
            "hidden-fields": list(HIDDEN_FIELDS),
            "relabeling": dict(RELABELING),
            "placeholders": dict(PLACEHOLDERS),
        },
        "conn-fields": {
            extra.name: {
                "label": extra.label,
                "schema": extra.schema(),
                "description": extra.description
                + (f" Default {extra.default}." if extra.default not in (None, False) else ""),
            }
            for extra in EXTRAS
        },
    }
