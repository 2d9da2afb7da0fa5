"""The production-shaped Airflow deployment: PostgreSQL, Redis, CeleryExecutor, a Celery worker, several triggerers.

What it takes (what a user's deployment takes too; docs/production.md says it for users):

- PostgreSQL as the metadata DB through ``postgresql+psycopg2://`` (SQLAlchemy 2.1 reads a bare
  ``postgresql://`` as psycopg 3); ``asyncpg`` installed too (Airflow derives its async URL from it);
- the CeleryExecutor (``apache-airflow-providers-celery``): Redis as the broker, PostgreSQL as the
  result backend, written ``db+postgresql+psycopg2://…``;
- a Celery worker consuming every queue a task names (``--queues default,luma``);
- two or more triggerers: supported on PostgreSQL (and MySQL 8), whose ``SELECT … FOR UPDATE SKIP
  LOCKED`` keeps two triggerers from taking one trigger (on SQLite the clause compiles to nothing);
- with trigger queues (``[triggerer] queues_enabled``), every triggerer started with ``--queues``:
  a trigger then carries its task's queue (``default`` unless the task names one), and a triggerer
  started without ``--queues`` takes only triggers with no queue, so none of the tasks' ones.

Everything binds 127.0.0.1 (the Celery worker and triggerers with ``--skip-serve-logs``). Use::

    with production_deployment(extra_env={"AIRFLOW_CONN_LUMA_DEFAULT": ...}, redis_connections={"budget": 1}) as dep:
        dep.redis_url             # redis://127.0.0.1:PORT (the broker is database 0)
        dep.add_connection(...)   # more connections at run time
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.deployment import AirflowDeployment, deployment_env
from tests.support.metadb import PostgresDatabase
from tests.support.redis_server import RedisServer
from tests.support.services import PostgresServer, find_binary, free_port

#: Two triggerers, neither with ``--queues``: Airflow's high-availability shape.
TWO_TRIGGERERS: Mapping[str, str | None] = {"triggerer": None, "triggerer-2": None}
#: Trigger queues on: two triggerers sharing the ``default`` queue (every task's, unless it names another) for
#: high availability, and one dedicated to tasks with ``queue="luma"``.
QUEUED_TRIGGERERS: Mapping[str, str | None] = {
    "triggerer": "default",
    "triggerer-2": "default",
    "triggerer-luma": "luma",
}
#: Seconds for ``db migrate`` on PostgreSQL plus every component (several triggerers start one at a time).
STARTUP_TIMEOUT = 240.0


@dataclass
class ProductionDeployment(AirflowDeployment):
    """An :class:`AirflowDeployment` on PostgreSQL and Redis; see :func:`production_deployment`."""

    redis: RedisServer | None = None
    postgres: PostgresServer | None = None

    @property
    def redis_url(self) -> str:
        """The Redis the deployment runs on, ``redis://127.0.0.1:PORT`` (Celery's broker: database 0)."""
        assert self.redis is not None
        return f"redis://{self.redis.host}:{self.redis.port}"

    def redis_connection(self, db: int = 1) -> str:
        """An Airflow ``redis`` connection (JSON) to this Redis, database ``db`` (read from the extra ``db``, as
        ``RedisHook`` does, not from a URL path): for :meth:`add_connection` or an ``AIRFLOW_CONN_...`` value."""
        assert self.redis is not None
        return self.redis.connection_json(db)


def production_plan(
    triggerers: Mapping[str, str | None], worker_queues: Sequence[str], worker_concurrency: int
) -> dict[str, tuple[str, ...]]:
    """``{component: airflow command}``: the scheduler, DAG processor, API server, a Celery worker, the triggerers.

    ``triggerers``: ``{name: --queues value or None}``; names start with ``triggerer``.
    """
    plan: dict[str, tuple[str, ...]] = {
        "scheduler": ("scheduler", "--skip-serve-logs"),
        "dag-processor": ("dag-processor",),
        "api-server": ("api-server",),
        "celery-worker": (
            "celery",
            "worker",
            "--skip-serve-logs",
            "--concurrency",
            str(worker_concurrency),
            "--queues",
            ",".join(worker_queues),
            "--without-mingle",
            "--without-gossip",
        ),
    }
    for name, queues in triggerers.items():
        if not name.startswith("triggerer"):
            raise ValueError(f"a triggerer's name starts with 'triggerer': {name!r}")
        plan[name] = ("triggerer", "--skip-serve-logs", *(("--queues", queues) if queues else ()))
    return plan


def production_env(
    home: Path, port: int, postgres: PostgresServer, redis: RedisServer, *, queues_enabled: bool, concurrency: int
) -> dict[str, str]:
    """The production shape's settings on top of :func:`deployment_env`'s."""
    database = f"postgresql+psycopg2://{postgres.user}@{postgres.host}:{postgres.port}/{postgres.dbname}"
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "32",
        "AIRFLOW__CELERY__BROKER_URL": redis.url(0),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__TRIGGERER__QUEUES_ENABLED": str(queues_enabled),
        # One threshold for every test: a triggerer silent this long has its triggers taken over (default 30 s).
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        # Triggers a triggerer claims per loop (about a second; default 50): lower, so that the triggerers share
        # a few dozen waits instead of the first one to loop taking them all; not so low that a survivor needs
        # many loops to take a dead one's waits (it claims this many a loop). The benchmark uses the same.
        "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": "10",
    }


@contextlib.contextmanager
def production_deployment(
    extra_env: Mapping[str, str] | None = None,
    *,
    triggerers: Mapping[str, str | None] = TWO_TRIGGERERS,
    worker_queues: Sequence[str] = ("default",),
    worker_concurrency: int = 8,
    redis_connections: Mapping[str, int] | None = None,
    keep_home: bool = False,
) -> Iterator[ProductionDeployment]:
    """Start PostgreSQL, Redis and a production-shaped Airflow in fresh temporary folders; always stop them all.

    :param extra_env: More environment for every component (``AIRFLOW_CONN_...``, settings); wins over ours.
    :param triggerers: ``{name: --queues value or None}``; any value turns ``[triggerer] queues_enabled`` on.
    :param worker_queues: The Celery queues the worker consumes (a task's ``queue`` must be one of them).
    :param worker_concurrency: Celery worker processes.
    :param redis_connections: ``{conn_id: Redis database number}``: Airflow ``redis`` connections to the
        deployment's Redis (database 0 is the broker's), e.g. for a Luma connection's ``budget_redis_conn_id``.
    :param keep_home: Keep ``AIRFLOW_HOME`` (also with ``LUMA_KEEP_DEPLOYMENT_HOME=1``); the servers' folders go.
    """
    home = Path(tempfile.mkdtemp(prefix="luma-prod-airflow-home-"))
    port = free_port()
    postgres, redis = PostgresServer(), RedisServer(find_binary("redis-server"))
    dep: ProductionDeployment | None = None
    try:
        postgres.start()
        redis.start()
        queues_enabled = any(triggerers.values())
        env = production_env(home, port, postgres, redis, queues_enabled=queues_enabled, concurrency=worker_concurrency)
        for conn_id, db in (redis_connections or {}).items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = redis.connection_json(db)
        env.update(extra_env or {})
        dep = ProductionDeployment(
            home=home,
            env=deployment_env(home, port, env),
            port=port,
            database=PostgresDatabase(postgres.host, postgres.port, postgres.user, postgres.dbname),
            plan=production_plan(triggerers, worker_queues, worker_concurrency),
            services={"postgres": postgres.process, "redis": redis.process},
            redis=redis,
            postgres=postgres,
        )
        dep.start(timeout=STARTUP_TIMEOUT)
        yield dep
    finally:
        if dep is not None:
            dep.stop()
        with contextlib.suppress(OSError):  # the server's log goes with its folder: keep a copy beside the others
            shutil.copy(postgres.log, home / "postgres.log")
        redis.stop()
        postgres.stop()
        if not keep_home and not os.environ.get("LUMA_KEEP_DEPLOYMENT_HOME"):
            shutil.rmtree(home, ignore_errors=True)
