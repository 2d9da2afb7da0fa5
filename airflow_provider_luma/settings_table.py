"""
Every setting of the Luma connection's extra, declared once.

From this table come the parsing (:mod:`airflow_provider_luma.hooks.settings`), the defaults of
:class:`~airflow_provider_luma.hooks.settings.LumaSettings` and of the wait's pacing
(:mod:`airflow_provider_luma.waiting`), both connection forms Airflow builds and the tables of
``docs/connection.md`` (:mod:`airflow_provider_luma.connection_form`). A new extra is one more
:class:`Setting` here.

Imports nothing but the standard library: Airflow's provider manager reads the form built from it
while Airflow starts, and :mod:`~airflow_provider_luma.waiting` reads its defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

#: The API's base URL when the connection's host is empty.
DEFAULT_HOST = "https://api.aimlapi.com"
#: The most seconds any time setting may hold: a day. Beyond it a socket time-out overflows ``time_t``.
MAX_SECONDS = 86400.0
#: How long the API holds a long poll at most; a read time-out must exceed it.
API_HOLD_SECONDS = 30.0

#: How a setting's value is read; each kind is one parser in :mod:`airflow_provider_luma.hooks.settings`.
#: ``seconds``: a finite number of seconds, at least ``minimum``, at most :data:`MAX_SECONDS`;
#: ``number``: a finite number within the bounds; ``whole``: a whole number within the bounds;
#: ``flag``: ``true``/``false``, ``1``/``0``, ``yes``/``no``; ``choice``: one of ``choices`` (any case);
#: ``family``: a choice naming an endpoint family (read as :class:`~airflow_provider_luma.models.ApiFamily`);
#: ``hosts``: host names, as a list or one comma-separated string (``*.example.com`` allowed);
#: ``conn_id``: the id of another Airflow connection.
Kind = Literal["seconds", "number", "whole", "flag", "choice", "family", "hosts", "conn_id"]


@dataclass(frozen=True)
class Setting:
    """
    One extra of the Luma connection.

    :param name: Its key in the connection's extra JSON, and the attribute of ``LumaSettings``.
    :param kind: How its value is read and checked (see :data:`Kind`).
    :param default: What applies when it is unset (``None``: nothing, or found out at run time).
    :param label: Its label in the connection form.
    :param help: What it does, in a sentence or two: the form's description and the docs table's text
        (code in backticks, which the form leaves out).
    :param common: Shown as a field of the connection form; the others (advanced) are set in the
        extra JSON and documented.
    :param minimum: The least value accepted (numbers).
    :param maximum: The greatest value accepted (numbers); ``seconds`` settings: at most a day.
    :param choices: The values accepted (``choice`` and ``family``).
    :param default_text: How the docs show the default, when its value alone does not say it.
    """

    name: str
    kind: Kind
    default: Any
    label: str
    help: str
    common: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    default_text: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "seconds" and self.maximum is None:
            object.__setattr__(self, "maximum", MAX_SECONDS)

    @property
    def shown_default(self) -> str:
        """The default as the docs and the form's description say it."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float) and self.default.is_integer():
            return f"{self.default:g}"
        return str(self.default)

    @property
    def accepts(self) -> str:
        """What values it accepts, in words (for the docs)."""
        if self.kind == "flag":
            return "true or false"
        if self.choices:
            return ", ".join(f"`{choice}`" for choice in self.choices)
        if self.kind == "hosts":
            return "a list of host names, or names separated by commas"
        bounds = []
        if self.kind == "whole":
            bounds.append("whole number")
        if self.minimum is not None:
            bounds.append(f"at least {self.minimum:g}")
        if self.maximum == MAX_SECONDS:
            bounds.append("at most a day")
        elif self.maximum is not None:
            bounds.append(f"at most {self.maximum:g}")
        return ", ".join(bounds)


_HOLD_NAMES = ("state", "status", "none")

SETTINGS: tuple[Setting, ...] = (
    # -- common: the connection form shows these ----------------------------------------------
    Setting("max_calls_per_second", "number", None, "Call budget (calls per second)",
            "The most API calls per second sent with this key by one process (a triggerer, a worker's task), "
            "or by all of them with a shared budget; on a 429 every call on the key pauses.",
            common=True, minimum=0.1, default_text="none (no budget)"),
    Setting("max_call_burst", "whole", None, "Call burst",
            "Calls beyond that rate that may go at once; no second holds more than rate + burst calls. "
            "Needs a call budget.",
            common=True, minimum=0, default_text="0"),
    Setting("video_hosts", "hosts", (), "Video hosts",
            "The only host names videos are downloaded from (`*.example.com` also matches its sub-domains), "
            "separated by commas or one per line.",
            common=True, default_text="any public host"),
    Setting("poll_interval", "seconds", 10.0, "Poll interval of the universal endpoint (s)",
            "Seconds between two polls of the universal endpoint (`luma/ray-*` models), which answers at once.",
            common=True, minimum=2.0),
    # -- advanced: set in the extra JSON ----------------------------------------------------------
    Setting("timeout", "seconds", 60.0, "Request timeout (s)",
            "Seconds one attempt of a call may take in all, however slowly the server sends. Keep it above the "
            "API's 30 s hold: a value not above `long_poll_hold` logs a warning for a non-loopback host.",
            minimum=1.0),
    Setting("connect_timeout", "seconds", 10.0, "Connect timeout (s)",
            "Seconds to establish a connection.",
            minimum=0.1),
    Setting("max_retries", "whole", 5, "Retries per call",
            "Retries of one call after 429, 5xx, dropped connections, read time-outs and unreadable answers.",
            minimum=0),
    Setting("ids_per_request", "whole", 6, "Ids per multi-fetch call",
            "Most generation ids in one multi-fetch call; larger lists are sent in chunks.",
            minimum=1),
    Setting("comma_separated_ids", "flag", False, "Comma-separated ids",
            "Send `generation_ids=A,B` instead of `generation_ids[]=A&generation_ids[]=B` (both documented; "
            "for proxies that mangle `[]`).",),
    Setting("min_poll_interval", "seconds", 5.0, "Least seconds between long polls",
            "Least seconds between two long polls of a wait when the server answers early.",
            minimum=0.05),
    Setting("max_backoff", "seconds", 60.0, "Longest back-off (s)",
            "Cap in seconds of a wait's back-off after polls that failed transiently.",
            minimum=0.1),
    Setting("api", "family", "luma-ai", "Endpoint family of bare ids",
            "Endpoint family of a bare generation id: `luma-ai`, or `video` (the universal endpoint).",
            choices=("luma-ai", "video")),
    Setting("long_poll_hold", "seconds", API_HOLD_SECONDS, "Server hold (s)",
            "How long the server holds a long poll at most; an answer far sooner with nothing at the target "
            "was not held.",
            minimum=0.1),
    Setting("single_hold_param", "choice", None, "Long-poll parameter, single fetch",
            "Pin the long-poll parameter of the single fetch (`none`: no hold).",
            choices=_HOLD_NAMES, default_text="found out"),
    Setting("multi_hold_param", "choice", None, "Long-poll parameter, multi fetch",
            "Pin the long-poll parameter of the multi fetch (`none`: no hold).",
            choices=_HOLD_NAMES, default_text="found out"),
    Setting("budget_redis_conn_id", "conn_id", None, "Shared call budget: Redis connection id",
            "A `redis` connection (e.g. Celery's broker): every process using this key (each triggerer, each "
            "worker) shares one call budget there. Needs a call budget.",
            default_text="none (a budget per process)"),
    Setting("allow_insecure_http", "flag", False, "Allow plain http to a remote host",
            "Allow `http://` to a non-loopback host (sends the key in clear text)."),
    Setting("max_video_bytes", "whole", 2 * 1024**3, "Largest video (bytes)",
            "Largest video a download accepts; a larger one fails.",
            minimum=1, default_text="2147483648 (2 GiB)"),
    Setting("allow_private_video_hosts", "flag", False, "Allow private video hosts",
            "Download videos from loopback and private addresses too (always allowed when the connection's "
            "own host is loopback, as for the simulator)."),
)  # fmt: skip

#: The settings by name.
SETTING: Mapping[str, Setting] = MappingProxyType({setting.name: setting for setting in SETTINGS})
#: Each setting's default, by name.
DEFAULTS: Mapping[str, Any] = MappingProxyType({setting.name: setting.default for setting in SETTINGS})


def floor(name: str) -> float:
    """The least value of the number setting ``name``."""
    minimum = SETTING[name].minimum
    if minimum is None:
        raise KeyError(f"setting {name!r} has no minimum")
    return minimum
