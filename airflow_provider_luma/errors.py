"""Errors raised by the Luma provider: one hierarchy under :class:`LumaError`."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException

#: Said by every error after which a (paid) generation may exist although its id never arrived.
MAYBE_CREATED_HINT = "The generation may have been created anyway: check before submitting again."


class LumaError(AirflowException):
    """
    Base of every error this provider raises.

    :param message: What went wrong and what to do about it; never contains the API key.
    :param http_status: The HTTP status the API answered with, when there was one.
    :param request_id: The ``requestId`` the API sent with its error, for support requests.
    """

    #: Whether a later call may succeed where this one failed (429, 5xx, dropped connections...).
    transient: bool = False
    #: Whether a create call failed in a way that leaves a (paid) generation possibly created.
    maybe_created: bool = False
    #: The server's own words, when it sent an error body (a 400 names the parameter it rejects).
    server_message: str | None = None
    #: Seconds the server asked to wait before the next attempt (its ``Retry-After``), if it said.
    retry_after: float | None = None

    def __init__(self, message: str, *, http_status: int | None = None, request_id: str | None = None):
        if request_id:
            message = f"{message} (requestId {request_id})"
        super().__init__(message)
        self.message = message
        # Not ``status_code``: AirflowException uses that name for its own API's answers.
        self.http_status = http_status
        self.request_id = request_id


class LumaInputError(LumaError, ValueError):
    """A parameter given to the provider is invalid; raised before any call is made."""


class LumaConfigurationError(LumaError):
    """The Luma connection is missing or unusable (no key, plain-http remote host, bad extra)."""


class LumaAuthenticationError(LumaError):
    """The API rejected the API key (401): it is wrong, revoked or missing."""


class LumaForbiddenError(LumaError):
    """The API refused the call (403): the account is out of credits or over its plan's call limit."""


class LumaNotFoundError(LumaError):
    """The generation (or route) does not exist (404)."""


class LumaValidationError(LumaError):
    """The API rejected the request body or parameters (400/422); carries the server's message."""


class LumaRateLimitError(LumaError):
    """
    Too many requests (429).

    :param retry_after: Seconds the server asked to wait (its ``Retry-After`` header), if it sent one.
    """

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class LumaRequestTimeoutError(LumaError):
    """The server gave up waiting for the request (408) before acting on it: safe to send again."""

    transient = True


class LumaConflictError(LumaError):
    """
    The request conflicts with the server's current state (409). A fetch may succeed later; a create
    is never resent after it, since the conflict may be with the generation it just made.
    """

    transient = True


class LumaServerError(LumaError):
    """The API failed on its side (5xx)."""

    transient = True


class LumaConnectionError(LumaError):
    """The API could not be reached, dropped the connection or did not answer in time."""

    transient = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs):
        super().__init__(message, **kwargs)
        #: False when the request never left this machine (connect refused / connect time-out).
        self.request_sent = request_sent


class LumaResponseError(LumaError):
    """The API answered with something that is not the JSON it documents (malformed, fields missing)."""

    transient = True


class LumaGenerationFailedError(LumaError):
    """
    A generation ended in the ``failed`` state.

    :param generation_id: The id of the failed generation.
    :param failure_reason: The reason the API gave, if any.
    """

    def __init__(self, generation_id: str, failure_reason: str | None):
        super().__init__(f"Luma generation {generation_id} failed: {failure_reason or 'the API gave no reason'}.")
        self.generation_id = generation_id
        self.failure_reason = failure_reason


class LumaWaitTimeoutError(LumaError):
    """A wait for generations reached its deadline before they reached the target state."""


class LumaRouteNotFoundError(LumaNotFoundError):
    """
    The server has no such route (its framework's generic 404, ``Cannot GET /path``), as opposed to
    a generation it does not know: the endpoint family is gone from this server.
    """
