"""Simulator: every option is declared once, and the constructor, attributes, /_sim/config, the CLI and the docs
all follow that declaration; the Python client drives the /_sim/ API with the same methods and errors.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_luma.testing import LumaSimulator, SimulatorClient
from airflow_provider_luma.testing.options import OPTIONS, OptionError, markdown_table
from tests.support.simulator_calls import GEN, auth

DOCS = Path(__file__).parents[2] / "docs" / "simulator.md"
BEGIN, END = "<!-- options table: begin -->\n", "<!-- options table: end -->"


def test_the_docs_table_is_the_declaration() -> None:
    page = DOCS.read_text()
    assert BEGIN in page
    assert END in page
    table = page.split(BEGIN, 1)[1].split(END, 1)[0]
    assert table == markdown_table(), (
        "docs/simulator.md's options table differs from the declaration; paste the output of\n"
        "  python -c 'from airflow_provider_luma.testing.options import markdown_table; print(markdown_table())'"
    )


def test_the_constructor_takes_every_option_with_its_declared_default() -> None:
    params = inspect.signature(LumaSimulator).parameters
    assert list(params) == [o.name for o in OPTIONS]
    assert {name: p.default for name, p in params.items()} == {o.name: o.default for o in OPTIONS}
    sim = LumaSimulator()
    for option in OPTIONS:
        if option.name not in ("port", "cdn_port"):  # the bound ports, once running
            assert getattr(sim, option.name) == option.check(option.default), option.name
    with pytest.raises(TypeError, match="hold_secs"):
        LumaSimulator(hold_secs=1)
    with pytest.raises(ValueError, match="hold_seconds"):
        LumaSimulator(hold_seconds="1")


def test_attributes_are_checked_and_fixed_options_stay_fixed(sim: LumaSimulator) -> None:
    sim.hold_seconds = 2  # an int is a number
    assert sim.hold_seconds == 2
    with pytest.raises(OptionError, match="hold_seconds"):
        sim.hold_seconds = "3"
    assert sim.hold_seconds == 2
    with pytest.raises(OptionError, match=r"state_file.*fixed"):
        sim.state_file = "/tmp/elsewhere.json"
    with pytest.raises(AttributeError):
        sim.api_key = "other"  # type: ignore[misc]


def test_config_changes_exactly_the_live_options(sim: LumaSimulator) -> None:
    live = {o.name for o in OPTIONS if o.live}
    values = requests.post(sim.base_url + "/_sim/config", json={}, timeout=5).json()
    assert set(values) - {"ok"} == live  # never the key, nor the fixed ones
    for option in OPTIONS:
        r = requests.post(sim.base_url + "/_sim/config", json={option.name: values.get(option.name)}, timeout=5)
        assert r.ok == option.live, (option.name, r.text)
        if not option.live:
            assert option.name in r.json()["error"]


def test_the_cli_has_a_flag_for_each_option_that_declares_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow_provider_luma.testing", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in OPTIONS:
        if option.flag:
            assert option.flag in out, option.flag
    bad = subprocess.run(
        [sys.executable, "-m", "airflow_provider_luma.testing", "--fault-rate", "2"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "--fault-rate" in bad.stderr


@pytest.fixture(params=["in-process", "over HTTP"])
def controls(request: pytest.FixtureRequest, sim: LumaSimulator) -> Any:
    """The simulator's own methods, or the same through :class:`SimulatorClient`."""
    return sim if request.param == "in-process" else SimulatorClient(sim.base_url)


def test_the_client_and_the_simulator_answer_alike(sim: LumaSimulator, controls: Any) -> None:
    controls.script("storm", outcome="failed", failure_reason="hail", queued_seconds=0, dreaming_seconds=0)
    controls.inject_fault("503", endpoint="create")
    assert requests.post(sim.base_url + GEN, json={"prompt": "x"}, headers=auth(sim), timeout=5).status_code == 503
    gen = requests.post(sim.base_url + GEN, json={"prompt": "a storm"}, headers=auth(sim), timeout=5).json()
    assert controls.generation(gen["id"])["failure_reason"] == "hail"
    controls.set_state(gen["id"], "completed")
    assert [g["state"] for g in controls.generations()] == ["completed"]
    assert controls.count("create") == 2
    assert [e["fault"] for e in controls.requests("create")] == ["503", None]
    assert controls.configure(multi_shape="data")["multi_shape"] == "data"
    with pytest.raises(ValueError, match="hold_seconds"):
        controls.configure(hold_seconds="5")
    with pytest.raises(ValueError, match="delay"):
        controls.inject_fault("slow", delay="soon")
    with pytest.raises(ValueError, match="outcome"):
        controls.script("x", outcome="maybe")
    with pytest.raises(KeyError):
        controls.set_state("no-such-id", "completed")
    with pytest.raises(KeyError):
        controls.generation("no-such-id")
    controls.clear_scripts()
    controls.clear_faults()
    controls.reset()
    assert controls.generations() == []
    assert controls.requests() == []
