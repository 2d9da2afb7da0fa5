"""Positive controls of the secret scans: a key planted in a log line, an XCom and a trigger row is found.

Airflow masks a connection's password in its own logs, so a scan that finds nothing proves little by
itself; these tests plant a key where the real checks look and run the same functions on it
(``tests.conftest.find_leaks``, ``OutputTee``, ``tests.deployment.harness.db_dump_text``). They plant
another key than the suite's sentinel, so that the per-test output check stays quiet. Also here: the
rule that tolerates a retry only for Airflow's own race (tests/deployment/AIRFLOW_RACE.md), on planted
audit log rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.support.connection import SENTINEL_KEY
from tests.support.deployment import AirflowDeployment, db_dump_text, retry_explained_by_airflows_race
from tests.support.logs import OutputTee, find_leaks

PLANTED = "sk-luma-PLANTED-0c3e9a51"


def test_a_key_logged_or_printed_is_found_even_when_the_test_read_the_output_itself(capsys):
    tee = OutputTee(capsys).start()
    try:
        logging.getLogger("airflow.task").info("calling with key %s", PLANTED)
        try:
            raise ValueError(f"bad key {PLANTED}")
        except ValueError:
            logging.getLogger("airflow_provider_luma").exception("failed")  # in the traceback only
        print(f"Authorization: Bearer {PLANTED}")
        assert PLANTED in capsys.readouterr().out  # the test consumes its output, as logged_text() does
        print("printed after the read")
    finally:
        text = tee.stop()

    leaks = find_leaks({"output": text}, secret=PLANTED)
    # The log line, the traceback line, the consumed print (and Airflow's own handlers may echo the log line).
    assert any("calling with key" in line for line in leaks["output"])
    assert any("ValueError: bad key" in line for line in leaks["output"])
    assert any("Bearer" in line for line in leaks["output"])
    assert "printed after the read" in text  # what was still captured at the end is read too
    assert find_leaks({"output": text}) == {}  # the suite's own key is not in it


def test_airflows_own_mask_secret_debug_line_is_the_only_exception():
    lines = f"[debug    ] MaskSecret(value='{PLANTED}')\n[info     ] connecting with {PLANTED}"
    assert find_leaks({"log": lines}, secret=PLANTED) == {"log": [f"[info     ] connecting with {PLANTED}"]}


@pytest.fixture
def planted_db(tmp_path: Path) -> Path:
    """A metadata DB with the tables the deployment scan reads; a key planted in one XCom and one trigger row."""
    path = tmp_path / "airflow.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE xcom (dag_id TEXT, run_id TEXT, task_id TEXT, key TEXT, value BLOB)")
        db.execute("CREATE TABLE trigger (id INTEGER, classpath TEXT, kwargs TEXT)")
        db.execute("CREATE TABLE log (id INTEGER, event TEXT, extra TEXT)")
        db.execute(
            "INSERT INTO xcom VALUES ('d', 'r', 'wait', 'return_value', ?)",
            (json.dumps({"id": "g-1", "request": {"callback_url": f"https://x/?key={PLANTED}"}}).encode(),),
        )
        db.execute("INSERT INTO xcom VALUES ('d', 'r', 'generate', 'generation_id', '\"g-1\"')")
        db.execute(
            "INSERT INTO trigger VALUES (7, 'airflow_provider_luma.triggers.luma.LumaGenerationTrigger', ?)",
            (json.dumps({"generation_ids": ["g-1"], "api_key": PLANTED}),),
        )
        db.execute("INSERT INTO log VALUES (1, 'running', 'nothing secret')")
    return path


def test_a_key_in_an_xcom_row_or_a_trigger_row_is_found(planted_db):
    text = db_dump_text(planted_db)
    assert "LumaGenerationTrigger" in text  # real material was read (tables missing here are skipped)

    (found,) = find_leaks({"database": text}, secret=PLANTED).values()
    assert [line.split(":", 1)[0] for line in found] == ["xcom", "trigger"]
    assert find_leaks({"database": text}) == {}


def test_a_key_in_a_connections_extra_is_found_but_not_its_password(tmp_path):
    # Stored connections (the production-shaped tests add some): the password is the key's place; the rest is not.
    path = tmp_path / "airflow.db"
    columns = "conn_id, conn_type, description, host, schema, login, port, extra"
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE connection ({columns}, password TEXT)")
        db.execute("INSERT INTO connection VALUES ('ok', 'luma', '', 'h', '', '', 0, '{}', ?)", (PLANTED,))
        extra = json.dumps({"k": PLANTED})
        db.execute("INSERT INTO connection VALUES ('bad', 'luma', '', 'h', '', '', 0, ?, 'x')", (extra,))
    (found,) = find_leaks({"database": db_dump_text(path)}, secret=PLANTED).values()
    assert [line.split(" | ")[0] for line in found] == ["connection: bad"]


def test_a_key_in_a_trigger_row_seen_only_by_the_sampler_is_found(tmp_path):
    # The trigger row is deleted when its task resumes; the sampler's copy is scanned instead.
    sampled = {7: f"airflow_provider_luma.triggers.luma.LumaGenerationTrigger | {{'api_key': '{PLANTED}'}}"}
    (found,) = find_leaks({"database": db_dump_text(tmp_path / "absent.db", sampled)}, secret=PLANTED).values()
    assert found[0].startswith("trigger (sampled): 7 |")


def test_a_key_in_an_xcom_value_read_back_is_found():
    xcoms = {("run", "wait"): {"id": "g-1", "video_url": f"https://cdn/v.mp4?token={PLANTED}"}}
    assert list(find_leaks({"xcom": repr(xcoms)}, secret=PLANTED)) == ["xcom"]
    assert SENTINEL_KEY != PLANTED


# -- the one retry a deployment test tolerates -------------------------------------------------------

RACE = (
    "Executor LocalExecutor(parallelism=8) reported that the task instance <TaskInstance: d.wait r [queued]> "
    "finished with state success, but the task instance's state attribute is queued."
)


@pytest.mark.parametrize(
    ("try_number", "mismatches", "tolerated"),
    [
        pytest.param(1, [], True, id="try 1"),
        pytest.param(2, [(1, RACE)], True, id="try 2 after the race on try 1"),
        pytest.param(2, [], False, id="try 2 without a mismatch of this task instance"),
        pytest.param(2, [(2, RACE)], False, id="mismatch of another try"),
        pytest.param(2, [(1, RACE.replace("state success", "state failed"))], False, id="executor said failed"),
        pytest.param(3, [(1, RACE), (2, RACE)], False, id="a third try"),
    ],
)
def test_only_airflows_race_on_this_task_instance_explains_a_retry(try_number, mismatches, tolerated):
    assert retry_explained_by_airflows_race(try_number, mismatches) is tolerated


def test_the_tolerance_reads_the_audit_log_of_this_task_instance_only(tmp_path):
    dep = AirflowDeployment(home=tmp_path, env={}, port=0)
    with sqlite3.connect(dep.db_path) as db:
        db.execute("CREATE TABLE task_instance (dag_id, run_id, task_id, map_index, try_number)")
        db.execute("CREATE TABLE log (dag_id, run_id, task_id, map_index, try_number, event, extra)")
        db.executemany(
            "INSERT INTO task_instance VALUES (?, ?, ?, ?, ?)",
            [("d", "ours", "wait", -1, 2), ("d", "other", "wait", -1, 2), ("d", "ours", "wait", 0, 2)],
        )
        # The race hit the other run's wait and a mapped instance of ours, not our unmapped wait.
        db.executemany(
            "INSERT INTO log VALUES (?, ?, ?, ?, ?, 'state mismatch', ?)",
            [("d", "other", "wait", -1, 1, RACE), ("d", "ours", "wait", 0, 1, RACE)],
        )
    assert not dep.retried_only_for_airflows_race("d", "ours", "wait")
    assert dep.retried_only_for_airflows_race("d", "other", "wait")
    assert dep.retried_only_for_airflows_race("d", "ours", "wait", map_index=0)
