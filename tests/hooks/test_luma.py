"""LumaHook against the simulator over real HTTP on loopback: sync calls, retries, waits, connection."""

from __future__ import annotations

import json
import re
import time

import pytest

from airflow_provider_luma.errors import (
    LumaAuthenticationError,
    LumaConfigurationError,
    LumaConnectionError,
    LumaError,
    LumaForbiddenError,
    LumaGenerationFailedError,
    LumaInputError,
    LumaNotFoundError,
    LumaRateLimitError,
    LumaServerError,
    LumaValidationError,
    LumaWaitTimeoutError,
)
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json
from tests.support.logs import LineRecorder


def use_connection(monkeypatch, sim: LumaSimulator, **extras) -> LumaHook:
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim, **extras))
    return LumaHook()


def set_conn(monkeypatch, **fields) -> LumaHook:
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({"conn_type": "luma", **fields}))
    return LumaHook()


# -- connection -----------------------------------------------------------------------------------


class TestConnection:
    def test_empty_host_defaults_to_the_public_api_over_https(self, monkeypatch):
        hook = set_conn(monkeypatch, password=SENTINEL_KEY)
        assert hook.settings.base_url == "https://api.aimlapi.com"
        assert SENTINEL_KEY not in repr(hook.settings)

    def test_plain_http_to_a_remote_host_is_refused(self, monkeypatch):
        hook = set_conn(monkeypatch, host="http://api.example.com", password=SENTINEL_KEY)
        with pytest.raises(LumaConfigurationError, match="clear text") as raised:
            _ = hook.settings
        assert "allow_insecure_http" in str(raised.value)

    def test_plain_http_to_a_remote_host_when_explicitly_allowed(self, monkeypatch):
        hook = set_conn(
            monkeypatch, host="http://proxy.internal:8080", password=SENTINEL_KEY, extra={"allow_insecure_http": True}
        )
        assert hook.settings.base_url == "http://proxy.internal:8080"

    @pytest.mark.parametrize("host", ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000"])
    def test_plain_http_to_loopback_is_allowed(self, monkeypatch, host):
        assert set_conn(monkeypatch, host=host, password=SENTINEL_KEY).settings.base_url == host

    def test_schema_field_gives_the_scheme_of_a_bare_host(self, monkeypatch):
        hook = set_conn(monkeypatch, host="127.0.0.1", port=8089, schema="http", password=SENTINEL_KEY)
        assert hook.settings.base_url == "http://127.0.0.1:8089"

    def test_missing_key(self, monkeypatch):
        with pytest.raises(LumaConfigurationError, match="has no API key"):
            _ = set_conn(monkeypatch, host="https://api.aimlapi.com").settings

    def test_missing_connection(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW_CONN_LUMA_DEFAULT", raising=False)
        with pytest.raises(LumaConfigurationError, match="does not exist"):
            _ = LumaHook(luma_conn_id="luma_nowhere").settings

    def test_bad_extra_names_itself(self, monkeypatch):
        hook = set_conn(monkeypatch, password=SENTINEL_KEY, extra={"timeout": "soon"})
        with pytest.raises(LumaConfigurationError, match="'timeout'"):
            _ = hook.settings

    def test_ui_form_hides_what_does_not_matter(self):
        behaviour = LumaHook.get_ui_field_behaviour()
        assert set(behaviour["hidden_fields"]) == {"schema", "login"}  # the port: for Airflow 3's Test button
        assert behaviour["relabeling"] == {"password": "API key"}

    def test_test_connection_accepts_a_good_key(self, luma_conn):
        assert LumaHook().test_connection() == (
            True,
            f"The Luma API at {luma_conn.base_url} accepted the key on the luma-ai and video endpoints.",
        )
        assert luma_conn.count("create") == 0  # the check costs nothing

    def test_test_connection_rejects_a_bad_key(self, monkeypatch, simulator):
        hook = set_conn(monkeypatch, host=simulator.base_url, password="sk-wrong-key")
        ok, message = hook.test_connection()
        assert not ok
        assert "rejected the key" in message

    def test_test_connection_says_out_of_credits(self, monkeypatch, simulator):
        simulator.exhausted_keys.add("sk-exhausted-key")
        ok, message = set_conn(monkeypatch, host=simulator.base_url, password="sk-exhausted-key").test_connection()
        assert not ok
        assert "out of credits" in message


# -- create ---------------------------------------------------------------------------------------


class TestCreate:
    def test_create_returns_the_new_generation_and_sends_the_body(self, luma_conn):
        generation = LumaHook().create_generation(
            "a red fox in the snow", aspect_ratio="16:9", model="ray-flash-2", resolution="720p", duration="5s"
        )
        assert generation.state == "queued"
        assert luma_conn.generation(generation.id)["request"] == {
            "prompt": "a red fox in the snow",
            "aspect_ratio": "16:9",
            "model": "ray-flash-2",
            "resolution": "720p",
            "duration": "5s",
        }

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"prompt": "x" * 2049}, "at most 2048"),
            ({"prompt": ""}, "non-empty"),
            ({"prompt": "ok", "aspect_ratio": "2:1"}, "aspect_ratio"),
            ({"prompt": "ok", "model": "ray-9"}, "model"),
            ({"prompt": "ok", "resolution": "8k"}, "resolution"),
            ({"prompt": "ok", "duration": "7s"}, "duration"),
            ({"prompt": "ok", "loop": "yes"}, "loop"),
            ({"prompt": "ok", "keyframes": {"frame2": None}}, "frame2"),
            ({"prompt": "ok", "keyframes": {"frame0": {"type": "video"}}}, "type"),
        ],
    )
    def test_bad_parameters_fail_before_any_call(self, luma_conn, kwargs, match):
        with pytest.raises(LumaInputError, match=match):
            LumaHook().create_generation(**kwargs)
        assert luma_conn.count() == 0

    def test_server_validation_error_carries_the_server_message_and_is_not_retried(self, luma_conn):
        pending = LumaHook().create_generation("first")
        with pytest.raises(LumaValidationError) as raised:
            LumaHook().create_generation("extend", keyframes={"frame0": {"type": "generation", "id": pending.id}})
        assert "requestId" in str(raised.value)
        assert luma_conn.count("create") == 2

    @pytest.mark.parametrize("kind", ["429", "503"])
    def test_create_is_retried_when_the_server_surely_did_not_act(self, luma_conn, kind):
        luma_conn.inject_fault(kind, endpoint="create")
        LumaHook().create_generation("retry me")
        assert luma_conn.count("create") == 2
        assert len(luma_conn.generations()) == 1

    @pytest.mark.parametrize("kind", ["500", "502", "504", "drop"])
    def test_create_is_not_resent_when_the_server_may_have_acted(self, luma_conn, kind):
        luma_conn.inject_fault(kind, endpoint="create", after=True)
        with pytest.raises(LumaError, match="may have been created anyway") as raised:
            LumaHook().create_generation("maybe paid")
        assert luma_conn.count("create") == 1  # never paid twice
        assert SENTINEL_KEY not in str(raised.value)


# -- fetch ----------------------------------------------------------------------------------------


class TestFetch:
    def test_long_poll_returns_as_soon_as_the_target_is_reached(self, luma_conn):
        luma_conn.hold_seconds = 10
        hook = LumaHook()
        generation = hook.create_generation("early")
        started = time.monotonic()
        assert hook.get_generation(generation.id, "dreaming").state == "dreaming"
        assert time.monotonic() - started < 5  # not the 10 s hold

    def test_long_poll_returns_a_later_state_at_once(self, luma_conn):
        hook = LumaHook()
        generation = hook.create_generation("later")
        luma_conn.set_state(generation.id, "completed")
        assert hook.get_generation(generation.id, "dreaming").state == "completed"

    def test_long_poll_answers_with_the_current_state_when_the_hold_ends(self, luma_conn):
        luma_conn.script("slow one", queued_seconds=30)
        hook = LumaHook()
        generation = hook.create_generation("a slow one")
        started = time.monotonic()
        assert hook.get_generation(generation.id, "completed").state == "queued"
        assert time.monotonic() - started >= luma_conn.hold_seconds * 0.9

    def test_no_state_answers_at_once(self, luma_conn):
        generation = LumaHook().create_generation("now")
        assert LumaHook().get_generation(generation.id).state == "queued"
        assert luma_conn.requests("get")[-1]["query"] == {"generation_id": generation.id}

    def test_the_video_url_is_read_from_the_assets(self, luma_conn):
        hook = LumaHook()
        generation = hook.wait_for_generation(hook.create_generation("video").id, timeout=20)
        assert generation.video_url == f"{luma_conn.cdn_url}/videos/{generation.id}.mp4"

    def test_unknown_id_is_not_found(self, luma_conn):
        with pytest.raises(LumaNotFoundError, match="4f1c"):
            LumaHook().get_generation("4f1c0000-0000-4000-8000-000000000001")

    @pytest.mark.parametrize("shape", ["list", "generations", "data"])
    @pytest.mark.parametrize("comma", [False, True])
    def test_multi_fetch_in_both_id_forms_and_every_answer_shape(self, monkeypatch, simulator, shape, comma):
        simulator.multi_shape = shape
        hook = use_connection(monkeypatch, simulator, comma_separated_ids=comma)
        ids = [hook.create_generation(f"many {i}").id for i in range(3)]
        assert [g.id for g in hook.get_generations(ids)] == ids
        query = simulator.requests("list")[-1]["query"]
        assert ("generation_ids" in query) is comma

    def test_multi_fetch_sends_ids_in_chunks(self, monkeypatch, simulator):
        hook = use_connection(monkeypatch, simulator, ids_per_request=2)
        ids = [hook.create_generation(f"chunk {i}").id for i in range(5)]
        assert [g.id for g in hook.get_generations(ids)] == ids
        assert simulator.count("list") == 3

    @pytest.mark.parametrize(
        ("kind", "extra"),
        [
            ("429", {}),
            ("429", {"retry_after": 1}),
            ("500", {}),
            ("502", {}),
            ("503", {}),
            ("504", {}),
            ("drop", {}),
            ("malformed", {}),
            ("missing_fields", {}),
        ],
    )
    def test_transient_faults_on_fetch_are_retried(self, luma_conn, kind, extra):
        hook = LumaHook()
        generation = hook.create_generation("faulty")
        luma_conn.inject_fault(kind, endpoint="get", **extra)
        started = time.monotonic()
        assert hook.get_generation(generation.id).id == generation.id
        assert luma_conn.count("get") == 2
        if extra.get("retry_after"):
            assert time.monotonic() - started >= 0.9  # Retry-After honoured

    def test_slow_answer_past_the_client_timeout_is_retried(self, monkeypatch, simulator):
        hook = use_connection(monkeypatch, simulator, timeout=1)
        generation = hook.create_generation("slow")
        simulator.inject_fault("slow", endpoint="get", delay=5)
        started = time.monotonic()
        assert hook.get_generation(generation.id).id == generation.id
        # Answered by the retry, not by the slow call (which the simulator logs only when it ends).
        assert time.monotonic() - started < 4

    def test_retries_are_bounded(self, monkeypatch, simulator):
        hook = use_connection(monkeypatch, simulator, max_retries=2)
        generation = hook.create_generation("down")
        simulator.inject_fault("500", endpoint="get", times=10)
        with pytest.raises(LumaServerError, match="500"):
            hook.get_generation(generation.id)
        assert simulator.count("get") == 3

    def test_rate_limit_error_says_what_to_do(self, monkeypatch, simulator):
        hook = use_connection(monkeypatch, simulator, max_retries=0)
        generation = hook.create_generation("busy")
        simulator.inject_fault("429", endpoint="get")
        with pytest.raises(LumaRateLimitError, match="pool"):
            hook.get_generation(generation.id)

    @pytest.mark.parametrize(("kind", "error"), [("401", LumaAuthenticationError), ("403", LumaForbiddenError)])
    def test_auth_errors_are_not_retried(self, luma_conn, kind, error):
        hook = LumaHook()
        generation = hook.create_generation("auth")
        luma_conn.inject_fault(kind, endpoint="get")
        with pytest.raises(error) as raised:
            hook.get_generation(generation.id)
        assert luma_conn.count("get") == 1
        assert SENTINEL_KEY not in str(raised.value)

    def test_unreachable_api(self, monkeypatch, simulator):
        hook = use_connection(monkeypatch, simulator, max_retries=1)
        simulator.stop()
        with pytest.raises(LumaConnectionError, match="could not be reached"):
            hook.get_generation("4f1c0000-0000-4000-8000-000000000001")

    def test_the_key_is_sent_as_a_bearer_token_and_redacted_in_the_log(self, luma_conn):
        LumaHook().create_generation("auth header")
        assert luma_conn.requests("create")[0]["authorization"] == "Bearer ***"
        assert SENTINEL_KEY not in json.dumps(luma_conn.requests())


# -- wait -----------------------------------------------------------------------------------------


class TestWait:
    def test_waits_through_the_states_and_logs_each_change_once_at_debug(self, luma_conn):
        # Longer than a 1 s hold per state, so the polls see every state.
        luma_conn.script("wait for me", queued_seconds=1.5, dreaming_seconds=1.5)
        hook = LumaHook()
        generation = hook.create_generation("wait for me")
        recorder = LineRecorder()
        wait = hook.new_wait([generation.id], "completed", timeout=30, logger=recorder)
        (done,) = hook.run_wait(wait).result()
        assert done.state == "completed"
        # Each change once, with its duration, at DEBUG: a wait's one INFO line is its end (the
        # trigger's or the task's), not every state on the way (unless report_progress).
        changes = re.findall(r"(\w+ → \w+) after \d+ s", "\n".join(recorder.at("debug")))
        assert changes == ["queued → dreaming", "dreaming → completed"], recorder.records
        assert recorder.at("info") == [], recorder.records

    def test_calls_per_wait_stay_near_one_per_state_change(self, luma_conn):
        luma_conn.hold_seconds = 30
        hook = LumaHook()
        generation = hook.create_generation("few calls")
        hook.wait_for_generation(generation.id, timeout=30)
        assert luma_conn.count("get") == 1  # one long poll held until completed

    def test_failed_generation_ends_the_wait_with_its_reason(self, luma_conn):
        luma_conn.script("doomed", outcome="failed", failure_reason="prompt rejected by moderation")
        hook = LumaHook()
        generation = hook.create_generation("doomed")
        with pytest.raises(LumaGenerationFailedError, match="prompt rejected by moderation") as raised:
            hook.wait_for_generation(generation.id, timeout=30)
        assert raised.value.generation_id == generation.id

    def test_timeout(self, luma_conn):
        luma_conn.script("forever", queued_seconds=600)
        hook = LumaHook()
        generation = hook.create_generation("forever")
        started = time.monotonic()
        with pytest.raises(LumaWaitTimeoutError, match="queued"):
            hook.wait_for_generation(generation.id, timeout=1.5)
        assert time.monotonic() - started < 1.5 + luma_conn.hold_seconds + 1

    def test_cannot_wait_for_failed(self, luma_conn):
        with pytest.raises(LumaInputError, match="cannot target 'failed'"):
            LumaHook().wait_for_generation("4f1c0000-0000-4000-8000-000000000001", "failed")

    def test_unknown_state(self, luma_conn):
        with pytest.raises(LumaInputError, match="Unknown Luma generation state 'done'"):
            LumaHook().get_generation("4f1c0000-0000-4000-8000-000000000001", "done")

    def test_transient_errors_are_no_news_until_the_deadline(self, monkeypatch, simulator):
        hook = use_connection(monkeypatch, simulator, max_retries=0)
        generation = hook.create_generation("flaky")
        simulator.inject_fault("503", endpoint="get", times=4)
        assert hook.wait_for_generation(generation.id, timeout=30).state == "completed"

    def test_permanent_error_ends_the_wait_at_once(self, luma_conn):
        hook = LumaHook()
        with pytest.raises(LumaNotFoundError):
            hook.wait_for_generation("4f1c0000-0000-4000-8000-000000000001", timeout=30)
        assert luma_conn.count("get") == 1

    def test_several_generations_with_one_failing(self, luma_conn):
        luma_conn.script("bad", outcome="failed", failure_reason="nsfw")
        luma_conn.script("good", queued_seconds=5, dreaming_seconds=5)
        hook = LumaHook()
        ids = [hook.create_generation("good one").id, hook.create_generation("bad one").id]
        with pytest.raises(LumaGenerationFailedError, match="nsfw") as raised:
            hook.wait_for_generations(ids, timeout=30)
        assert raised.value.generation_id == ids[1]

    def test_polite_when_the_server_ignores_state(self, monkeypatch, simulator):
        simulator.ignore_state_param = True
        simulator.script("spaced", queued_seconds=1.0, dreaming_seconds=1.0)
        hook = use_connection(monkeypatch, simulator, min_poll_interval=0.5)
        generation = hook.create_generation("spaced")
        hook.wait_for_generation(generation.id, timeout=30)
        # ~2 s of generation at one call per 0.5 s: about 5 calls, never a hot loop.
        assert simulator.count("get") <= 7


def test_bare_ipv6_host_with_a_separate_port(monkeypatch):
    hook = set_conn(monkeypatch, host="::1", port=8089, schema="http", password=SENTINEL_KEY)
    assert hook.settings.base_url == "http://[::1]:8089"


def test_multi_fetch_in_several_chunks_holds_every_call_at_once(monkeypatch, simulator):
    simulator.script("held", queued_seconds=60)
    hook = use_connection(monkeypatch, simulator, ids_per_request=2)
    ids = [hook.create_generation(f"held {i}").id for i in range(5)]
    started = time.monotonic()
    assert {g.state for g in hook.get_generations(ids, "completed")} == {"queued"}
    # Three chunks, each a long poll, held at once: about one hold, not three.
    assert time.monotonic() - started < 2 * simulator.hold_seconds
    # The multi fetch's hold parameter is "status", as the service's schema names it.
    assert [("status" in r["query"]) for r in simulator.requests("list")] == [True, True, True]
