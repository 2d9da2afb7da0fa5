"""
Helpers shared by the tests, in one place: test modules import them from here, never from each other.

- :mod:`.connection`: the sentinel key and the ``AIRFLOW_CONN_...`` JSON of a simulator;
- :mod:`.logs`: what a test logged, and the one secret scan;
- :mod:`.polls`: waiting for a simulator to have been polled, timelines moved by polls;
- :mod:`.events`: running a trigger to its event(s);
- :mod:`.tasks`: the fake task instance and task state store the operators are driven with;
- :mod:`.relay`: a loopback relay in front of the simulator that rewrites chosen answers;
- :mod:`.stub_server`: a loopback HTTP server whose answers a test writes itself;
- :mod:`.simulator_calls`: plain HTTP calls to a simulator, as an API client would make them;
- :mod:`.dag_runner`: running a DAG file with ``dag.test()`` on every supported Airflow;
- :mod:`.deployment`: a real Airflow deployment (scheduler, triggerer, ...) on loopback, SQLite shape;
  :mod:`.observation` its reading half; :mod:`.metadb` its metadata DB (SQLite or PostgreSQL);
- :mod:`.production`: the production shape (PostgreSQL and Redis from :mod:`.services`, Celery, N triggerers);
- :mod:`.failover`: two triggerers, one SIGKILLed (the deployment test's and the benchmark's scenario);
  :mod:`.warmup`: warming every triggerer first;
- :mod:`.scenarios`: retry reuse and the Asset pair, run on both shapes.
- :mod:`.budget`: windows of a request log, and client processes sharing a call budget;
- :mod:`.redis_server`: a redis-server of the test's own on loopback (the production shape's too);
- :mod:`.links`: a task instance's extra links as Airflow's web tier works them out;
- :mod:`.examples`: the example DAGs run on such a deployment;
- :mod:`.markers`: the ``deployment`` mark of the folders whose tests start one;
- :mod:`.browser`: headless Chromium (Debian's) driving Airflow's UI.

Fixtures live in each folder's ``conftest.py``.
"""
