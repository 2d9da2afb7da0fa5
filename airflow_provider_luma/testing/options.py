"""The simulator's behaviour, declared once.

Each :class:`Option` says its name, default, accepted values, meaning, whether ``POST /_sim/config`` (and
attribute assignment) may change it while running, and its command-line flag. From :data:`OPTIONS` come the
``LumaSimulator`` constructor's keywords, the checks on every change, the ``/_sim/config`` API, the CLI's
flags (:mod:`.__main__`) and the table in ``docs/simulator.md`` (:func:`markdown_table`, held against the
page by a test).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_luma.testing.checks import (
    Check,
    Choice,
    Choices,
    Flag,
    Keys,
    Maybe,
    Number,
    PathValue,
    Text,
    Words,
)
from airflow_provider_luma.testing.faults import FAULT_KINDS
from airflow_provider_luma.testing.store import STATES

__all__ = [
    "BY_NAME",
    "DEFAULT_API_KEY",
    "HOLD_PARAMS",
    "MULTI_SHAPES",
    "OPTIONS",
    "Option",
    "OptionError",
    "Settings",
    "markdown_table",
]

DEFAULT_API_KEY = "luma-simulator-key"
MULTI_SHAPES: tuple[str, ...] = ("list", "generations", "data")
#: Query names a ``luma-ai`` fetch can read its long-poll target from.
HOLD_PARAMS: tuple[str, ...] = ("state", "status")
#: The longest timeline step or hold accepted: a day.
_DAY = 86_400


@dataclass(frozen=True)
class Option:
    """
    One option of the simulator.

    :param name: The constructor keyword, attribute and ``/_sim/config`` key.
    :param default: Its value unless given.
    :param check: Accepts or refuses a value (:mod:`.checks`).
    :param help: What it does (the docs table, ``--help``).
    :param live: ``POST /_sim/config`` may change it while running (otherwise only the constructor).
    :param flag: The CLI flag (None: none). A ``True``-by-default switch's flag turns it off.
    :param cli_default: The CLI's default where it differs (fixed ports, so another process can find it).
    :param env: An environment variable the CLI reads the default from (keeps a key out of ``ps``).
    :param family: The endpoint family that reads it (empty: the whole simulator).
    """

    name: str
    default: Any
    check: Check
    help: str
    live: bool = True
    flag: str | None = None
    cli_default: Any = None
    env: str | None = None
    family: str = ""


OPTIONS: tuple[Option, ...] = (
    Option("host", "127.0.0.1", Text(empty=False, header=True), "where both origins listen", live=False, flag="--host"),
    Option("port", 0, Number(0, 65535, integer=True), "API port (0: a free one)", False, "--port", 8089),
    Option(
        "cdn_port", 0, Number(0, 65535, integer=True), "video origin port (0: a free one)", False, "--cdn-port", 8090
    ),
    Option(
        "api_key",
        DEFAULT_API_KEY,
        Text(empty=False, header=True),
        "the only key accepted",
        live=False,
        flag="--api-key",
        env="LUMA_SIMULATOR_API_KEY",
    ),
    Option("exhausted_keys", frozenset(), Keys(), "keys answered with 403 (out of credits)", live=False),
    Option("hold_seconds", 30.0, Number(0, _DAY), "longest hold of a long poll", flag="--hold", family="luma-ai"),
    Option("queued_seconds", 1.0, Number(0, _DAY), "default time a new generation stays `queued`", flag="--queued"),
    Option("dreaming_seconds", 2.0, Number(0, _DAY), "then `dreaming`", flag="--dreaming"),
    Option(
        "multi_shape",
        "list",
        Choice(*MULTI_SHAPES),
        'multi-fetch answer: a list, `{"generations": [...]}` or `{"data": [...]}`',
        flag="--multi-shape",
        family="luma-ai",
    ),
    Option(
        "single_hold_param",
        "state",
        Choice(*HOLD_PARAMS),
        "the query name the single fetch holds on",
        flag="--single-hold-param",
        family="luma-ai",
    ),
    Option(
        "multi_hold_param",
        "status",
        Choice(*HOLD_PARAMS),
        "the query name the multi fetch holds on",
        flag="--multi-hold-param",
        family="luma-ai",
    ),
    Option(
        "ignore_state_param", False, Flag(), "never hold a long poll", flag="--ignore-state-param", family="luma-ai"
    ),
    Option("strict_query", False, Flag(), "400 on unknown query parameters", flag="--strict-query"),
    Option(
        "luma_ai_routes_gone",
        False,
        Flag(),
        'every `luma-ai` route answers the framework\'s "Cannot GET/POST" 404',
        flag="--luma-ai-routes-gone",
        family="luma-ai",
    ),
    Option(
        "universal_id_field",
        "id",
        Choice("id", "generation_id"),
        "key of the id in the universal create's answer",
        flag="--universal-id-field",
        family="universal",
    ),
    Option(
        "universal_id_suffix",
        True,
        Flag(),
        "universal ids end with `:<model>` (off: bare uuids)",
        flag="--universal-no-id-suffix",
        family="universal",
    ),
    Option(
        "universal_status_words",
        None,
        Maybe(Words(STATES)),
        "overrides of the universal status words, by state (CLI: `queued=waiting,dreaming=active`)",
        flag="--universal-status-words",
        family="universal",
    ),
    Option(
        "state_file", None, Maybe(PathValue()), "keep generations in this file across restarts", False, "--state-file"
    ),
    Option(
        "fault_rate", 0.0, Number(0, 1), "probability of a random transient fault per API call", flag="--fault-rate"
    ),
    Option(
        "fault_kinds",
        ("500", "503", "429", "drop"),
        Choices(*FAULT_KINDS),
        "kinds drawn from for random faults (CLI: comma-separated)",
        flag="--fault-kinds",
    ),
    Option("seed", 0, Maybe(Number(integer=True)), "seed of the random faults, for reproducible runs", False, "--seed"),
    Option(
        "status_code_as_string",
        False,
        Flag(),
        "`statusCode` in error bodies as a string",
        flag="--status-code-as-string",
    ),
    Option("backlog", 4096, Number(1, 65535, integer=True), "listen backlog of both sockets", False, "--backlog"),
    Option("shutdown_timeout", 2.0, Number(0, 600), "seconds `stop()` waits for requests in flight", live=False),
)
BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


class OptionError(ValueError):
    """A value an option does not accept; the message starts with the option's name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.option = name


def check(name: str, value: Any, *, live_only: bool = False) -> Any:
    """The value option ``name`` keeps for ``value``; :class:`OptionError` if unknown, fixed or refused."""
    option = BY_NAME.get(name)
    if option is None:
        live = sorted(o.name for o in OPTIONS if o.live or not live_only)
        raise OptionError(name, f"no such option (known: {', '.join(live)})")
    if live_only and not option.live:
        raise OptionError(name, "is fixed when the simulator is made (a constructor keyword or CLI flag)")
    try:
        return option.check(value)
    except ValueError as exc:
        raise OptionError(name, str(exc)) from None


def _plain(value: Any) -> Any:
    """A JSON form of an option's value."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    return value


class Settings:
    """
    The current value of every option; reads by attribute, changes through :meth:`update` (checked, atomic).

    :param given: Option values by name (the others take their defaults); ``TypeError`` for an unknown name,
        :class:`OptionError` for a refused value, as a Python function's keywords would.
    """

    def __init__(self, **given: Any) -> None:
        unknown = sorted(set(given) - set(BY_NAME))
        if unknown:
            raise TypeError(f"unexpected simulator option(s) {unknown}; known: {sorted(BY_NAME)}")
        self._lock = threading.Lock()
        # The values are plain attributes: every request reads several, so no lookup hook is in the way.
        self.__dict__.update({o.name: o.check(o.default) for o in OPTIONS})
        self.update(given)

    def __getattr__(self, name: str) -> Any:
        # Reached only for a name that is not an option (the options are plain attributes); typed readers
        # see every option as Any.
        raise AttributeError(f"no simulator option {name!r}")

    def update(self, changes: Mapping[str, Any], *, live_only: bool = False) -> None:
        """Check every change, then apply them all (or none, if one is refused)."""
        checked = {name: check(name, value, live_only=live_only) for name, value in changes.items()}
        with self._lock:
            self.__dict__.update(checked)

    def snapshot(self, *, live_only: bool = True) -> dict[str, Any]:
        """The values as JSON (``live_only``: only those ``/_sim/config`` can change; never the key)."""
        chosen = [o for o in OPTIONS if (o.live or not live_only) and o.name != "api_key"]
        return {o.name: _plain(getattr(self, o.name)) for o in chosen}


def _shown(value: Any) -> str:
    if value is None or value == frozenset():
        return "none"
    if isinstance(value, tuple):
        return "`" + " ".join(value) + "`"
    return f"`{value}`"


def markdown_table() -> str:
    """The options table of ``docs/simulator.md``."""
    rows = [
        "| option | default | CLI flag | `/_sim/config` | meaning; accepted values |",
        "|---|---|---|---|---|",
    ]
    for o in OPTIONS:
        flag = f"`{o.flag}`" if o.flag else ""
        family = f" ({o.family} family)" if o.family else ""
        rows.append(
            f"| `{o.name}` | {_shown(o.default)} | {flag} | {'yes' if o.live else ''} | "
            f"{o.help}{family}; {o.check.describe} |"
        )
    return "\n".join(rows) + "\n"
