"""The connection test (the **Test** button, ``airflow connections test``): what the key reaches, or what to fix."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from airflow_provider_luma.errors import (
    LumaAuthenticationError,
    LumaConnectionError,
    LumaError,
    LumaForbiddenError,
    LumaNotFoundError,
    LumaRouteNotFoundError,
)
from airflow_provider_luma.hooks.endpoints import PROBE_GENERATION_ID, fetch_plan
from airflow_provider_luma.models import ApiFamily, GenerationRef

if TYPE_CHECKING:
    from airflow_provider_luma.hooks.luma import LumaHook

#: Seconds each probe may take in all: the button must answer in seconds, not after a long poll's minute.
PROBE_TIMEOUT = 15.0


def check_connection(hook: LumaHook) -> tuple[bool, str]:
    """
    Check the key without paying: fetch an id that cannot exist from each endpoint family; a "not
    found" of that generation means the key was accepted there. A "no such route" (the framework's
    generic ``Cannot GET /path`` 404) means the family is gone from the server, and proves nothing
    about the key. Each probe is tried once (a per-call retry override, no retries) and bounded in all
    by :data:`PROBE_TIMEOUT`, so a wrong host fails at once.
    """
    try:
        settings = hook.settings
    except LumaError as error:
        return False, error.message  # the connection itself is unusable: the message says what to fix
    base = settings.base_url
    reached: list[str] = []
    gone: list[str] = []
    for family in ApiFamily:
        try:
            ref = GenerationRef(PROBE_GENERATION_ID, family)
            hook.run(fetch_plan(settings, ref, deadline=time.time() + PROBE_TIMEOUT, retries=0))
        except LumaRouteNotFoundError:
            gone.append(family.value)
            continue
        except LumaNotFoundError:
            pass
        except LumaAuthenticationError:
            return False, (
                f"The Luma API at {base} rejected the key (401): check the API key in the connection's password "
                "(API key) field."
            )
        except LumaForbiddenError:
            return False, (
                f"The Luma API at {base} accepted the key, but the account is out of credits or over the plan's "
                "limit (403): top up the account or wait for the limit to reset."
            )
        except LumaConnectionError as error:
            return False, f"{error.message} {_host_hint(base, error.message)}"
        except LumaError as error:
            return False, error.message
        reached.append(family.value)
    if not reached:
        return False, (
            f"The server at {base} has no Luma endpoints: it answered 'no such route' (404 'Cannot GET ...') on "
            f"the {' and the '.join(gone)} endpoints, so the key was not checked. It is not the AI/ML API, or "
            "the host's path is wrong: check the connection's host."
        )
    message = f"The Luma API at {base} accepted the key on the {' and '.join(reached)} endpoints."
    if gone:
        message += f" The {' and '.join(gone)} endpoints are gone from this server."
    return True, message


def _host_hint(base: str, message: str) -> str:
    """What to check when the server could not be reached or dropped the connection."""
    hint = f"Check the connection's host ({base}): its scheme, address and port."
    if base.startswith("https://") and "http://" not in message:
        # A host given without a scheme gets https://; a local server or simulator usually speaks plain http.
        hint += " If the server speaks plain http (a local simulator or proxy), write the host as http://host:port."
    return hint
