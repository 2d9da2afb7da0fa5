"""Property-based: arbitrary JSON-like answers never crash the parsers with anything but a clear LumaError."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_luma.errors import LumaError, LumaRateLimitError, LumaResponseError
from airflow_provider_luma.hooks.luma import error_for_response, parse_json
from airflow_provider_luma.models import Generation, GenerationState, parse_generation_list
from airflow_provider_luma.outcome import storable_text

pytestmark = pytest.mark.timeout(120)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Field names the parsers look at, so generated objects hit the interesting branches often.
KEYS = st.sampled_from(
    [
        "id",
        "state",
        "failure_reason",
        "created_at",
        "assets",
        "video",
        "url",
        "video_url",
        "generations",
        "data",
        "message",
        "detail",
        "error",
        "errors",
        "requestId",
        "statusCode",
    ]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["queued", "dreaming", "completed", "failed", "", " ", "https://cdn/x.mp4"])
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6), max_leaves=25
)
#: State texts the parsers must read right (any case), and some they must not take for one.
STATES = st.sampled_from(["queued", "dreaming", "completed", "failed", "Dreaming", "COMPLETED", "rendering", ""])
GENERATION_LIKE = st.fixed_dictionaries(
    {"id": st.text(max_size=10) | JSON},
    optional={
        "state": STATES | JSON,
        **{k: JSON for k in ["failure_reason", "created_at", "assets", "video", "video_url"]},
    },
)
#: The waitable states in the API's order; ``failed`` reaches none of them.
ORDER = ["queued", "dreaming", "completed"]
#: Both families' words for them, as the service documents and its examples use them (independent of the code's table).
WORDS = {
    **{w: "queued" for w in ("queued", "waiting", "pending")},
    **{w: "dreaming" for w in ("dreaming", "generating", "active", "processing")},
    "completed": "completed",
    **{w: "failed" for w in ("failed", "error")},
}
DEEP = "[" * 100_000 + "]" * 100_000


def outcome(parse, *args, **kwargs):
    """``(result, None)`` or ``(None, error)`` for a LumaResponseError; anything else propagates (a crash)."""
    try:
        return parse(*args, **kwargs), None
    except LumaResponseError as error:
        return None, error


@SETTINGS
@given(JSON | GENERATION_LIKE)
@example({"id": "g-1", "state": "Dreaming"})
@example({"id": "g-1", "state": "COMPLETED"})
@example({"id": "g-1", "state": "failed"})
@example({"id": "g-1", "state": "queued"})
@example({"id": "g-1", "status": "generating"})
@example({"generation_id": "g-1", "status": "error"})
def test_generation_from_api(payload):
    generation, error = outcome(Generation.from_api, payload)
    if error is not None:
        assert error.message
        assert error.transient  # the next poll may get a proper answer
        return
    assert isinstance(generation.id, str)
    assert generation.id.strip()
    assert generation.video_url is None or (isinstance(generation.video_url, str) and generation.video_url)
    event = json.loads(json.dumps(generation.to_dict()))  # plain JSON: fit for a trigger event
    assert Generation.from_dict(event) == generation
    # The state in our words when the API's word is known (as written otherwise), and what it means,
    # from an independent reading of the API's order.
    state = payload.get("state") if isinstance(payload, dict) else None
    if state is None and isinstance(payload, dict):
        state = payload.get("status")
    meaning = None if state is None else WORDS.get(str(state).strip().lower())
    # (As written: made valid UTF-8 and cut at 64 bytes, since it is logged and stored.)
    assert generation.state == (None if state is None else meaning or storable_text(str(state), 64))
    assert generation.is_failed == (meaning == "failed")
    for target in ORDER:
        reached = meaning in ORDER and ORDER.index(meaning) >= ORDER.index(target)
        assert generation.has_reached(GenerationState(target)) == reached


@SETTINGS
@given(JSON | st.lists(GENERATION_LIKE, max_size=3) | st.fixed_dictionaries({"generations": st.lists(JSON)}))
def test_parse_generation_list(payload):
    generations, error = outcome(parse_generation_list, payload)
    if error is not None:
        assert error.message
        return
    assert all(isinstance(g, Generation) and g.id.strip() for g in generations)


@SETTINGS
@given(st.text(max_size=200) | JSON.map(json.dumps))
def test_parse_json(text):
    value, error = outcome(parse_json, text, what="fetching generation g-1")
    if error is not None:
        assert "fetching generation g-1" in error.message
        return
    assert json.loads(text) == value or value != value  # NaN never equals itself


def test_parse_json_of_deeply_nested_text():
    with pytest.raises(LumaResponseError):
        parse_json(DEEP, what="fetching generation g-1")


HEADERS = st.dictionaries(
    st.sampled_from(["Retry-After", "Content-Type", "X-Other"]),
    st.text(max_size=12) | st.floats(allow_nan=True).map(str) | st.integers(-5, 10**6).map(str),
    max_size=3,
)


@SETTINGS
@given(
    status=st.integers(100, 599),
    text=st.text(max_size=200) | JSON.map(json.dumps),
    headers=HEADERS,
)
@example(status=429, text='{"message": "slow down", "statusCode": "429"}', headers={"Retry-After": "nan"})
@example(status=429, text="", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
@example(status=400, text='{"message": null, "errors": [{"path": "prompt"}]}', headers={})
def test_error_for_response(status, text, headers):
    error = error_for_response(status, text, headers, what="creating a generation", conn_id="luma_default")
    assert isinstance(error, LumaError)
    assert error.http_status == status
    assert str(status) in error.message
    assert "creating a generation" in error.message
    assert error.transient == (status in (408, 409, 429) or status >= 500)
    if isinstance(error, LumaRateLimitError) and error.retry_after is not None:
        assert error.retry_after >= 0


def test_error_for_response_of_deeply_nested_text():
    error = error_for_response(502, DEEP, {}, what="creating a generation", conn_id="luma_default")
    assert isinstance(error, LumaError)
