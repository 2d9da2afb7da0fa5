"""
The "Luma video" buttons of the provider's tasks: a link to each video a task knows.

Where a link is worked out depends on Airflow:

- **Airflow 3** computes every operator link in the *worker*, when the task ends, and stores it in
  XCom (``airflow/sdk/execution_time/task_runner.py``, ``finalize``); the API server only reads that
  XCom back (``XComOperatorLink``, ``airflow/serialization/definitions/operatorlink.py``). So a task
  links to what it knew when it ended: the sensor and a waiting generate task their videos, the
  download task its sources. A link is never read from XCom in the worker: a missing key there is
  logged at ERROR level by Airflow's client (``airflow/sdk/api/client.py``, "XCom not found"), so
  each operator remembers its videos (:meth:`LumaVideoLinks.remember_videos`) and the link reads that.
- A generate task with ``wait_for_completion=False`` ends before its video exists. Its link is
  looked up when the page is viewed instead, from what the downstream task that waited for the
  generation (a :class:`~airflow_provider_luma.sensors.luma.LumaGenerationSensor`) stored in XCom: no
  API call and no key in the web tier. On Airflow 3 only links declared by a *plugin* run in the API
  server, so the provider ships one (:mod:`airflow_provider_luma.plugins`).
- **Airflow 2.11** runs every link in the webserver, when the page is viewed: the same XCom lookups.

The number of links is fixed when the DAG is parsed (Airflow serializes a task's links by name); a
task that may know several videos (a sensor of ``generation_ids``, a download of a list) gets one
link per generation when their number is known then, else :data:`MAX_VIDEO_LINKS`; Airflow 3's UI
hides the links that stay empty. Every video, beyond those too, is in the task's XCom.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from airflow.providers.common.compat.sdk import BaseOperatorLink, MappedOperator, XComArg

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey

#: Links of a task whose number of videos is not known when the DAG is parsed (a mapped task's output).
MAX_VIDEO_LINKS = 10
#: XCom key of the download task's videos: ``[{"generation_id", "video_url", "path"}]``.
DOWNLOADED_VIDEOS_XCOM_KEY = "luma_videos"
#: XCom key of the generate task's video URL (pushed once completed) and of its generation id.
VIDEO_URL_XCOM_KEY = "video_url"
GENERATION_ID_XCOM_KEY = "generation_id"
#: Where each kind of task keeps its videos.
GENERATE, SENSOR, DOWNLOAD = "generate", "sensor", "download"


@attrs.define
class LumaVideoLink(BaseOperatorLink):
    """
    The "Luma video" button of a Luma task (``Luma video 2``, ``Luma video 3`` ... for further videos).

    :param index: Which of the task's videos (0: the first).
    :param source: The kind of task: ``generate``, ``sensor`` or ``download``.
    """

    index: int = 0
    source: str = GENERATE

    @property
    def name(self) -> str:
        """The button's text."""
        return "Luma video" if self.index == 0 else f"Luma video {self.index + 1}"

    @property
    def xcom_key(self) -> str:
        """Where Airflow 3 stores the link: one key per button (the first keeps the class's default)."""
        suffix = "" if self.index == 0 else f"_{self.index + 1}"
        return f"_link_{type(self).__name__}{suffix}"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        """The video's URL, or ``""`` while there is none (only ever an ``http(s)`` link)."""
        if isinstance(operator, LumaVideoLinks):
            # In the worker (Airflow 3, the task just ended): what the task itself saw.
            urls = operator.remembered_videos()
        else:
            # The webserver (2.11) or the API server (3.x, a plugin's link): what the tasks stored.
            urls = stored_videos(self.source, operator, ti_key)
        url = urls[self.index] if self.index < len(urls) else None
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


class LumaVideoLinks:
    """
    Mixin of the provider's operators: their "Luma video" links, and the videos those link to.

    An operator declares its class's links with :func:`video_links` (what a mapped task of it gets),
    sets its own in ``__init__`` with :meth:`expect_videos` where it may know several, and calls
    :meth:`remember_videos` once it knows them; the links read them when the task ends.
    """

    #: The kind of task (see :class:`LumaVideoLink`).
    luma_video_source: ClassVar[str] = GENERATE
    operator_extra_links: Collection[BaseOperatorLink]
    _luma_video_urls: list[str | None] | None = None

    def expect_videos(self, value: Any, *, single: bool = False) -> None:
        """
        One link per generation ``value`` holds, as far as the DAG file tells (see :func:`expected_videos`).

        :param single: ``value`` is one generation whatever it looks like (a template, an ``XComArg``).
        """
        count = 1 if single else expected_videos(value)
        self.operator_extra_links = video_links(self.luma_video_source, count)

    def remember_videos(self, generations: Iterable[Any]) -> None:
        """Keep the video URLs of ``generations`` (dicts or :class:`~airflow_provider_luma.models.Generation`)."""
        self._luma_video_urls = [_video_url(generation) for generation in generations]

    def remembered_videos(self) -> list[str | None]:
        """The video URLs remembered so far (none if the task failed before knowing them)."""
        return list(self._luma_video_urls or [])


def video_links(source: str, count: int) -> tuple[LumaVideoLink, ...]:
    """The links of a task of kind ``source`` that may know ``count`` videos."""
    return tuple(LumaVideoLink(index=i, source=source) for i in range(max(1, count)))


def expected_videos(value: Any) -> int:
    """
    How many videos a task given ``value`` (ids, generations, an ``XComArg``, a list of those) will
    know, as far as the DAG file tells; :data:`MAX_VIDEO_LINKS` where it does not (at most that).
    """
    return max(1, min(MAX_VIDEO_LINKS, _count(value)))


def _count(value: Any) -> int:
    if isinstance(value, XComArg):
        operator = getattr(value, "operator", None)
        if isinstance(operator, MappedOperator) or not isinstance(operator, LumaVideoLinks):
            return MAX_VIDEO_LINKS  # as many as the map has: known only once it ran
        return len(operator.operator_extra_links)
    if isinstance(value, str):
        return MAX_VIDEO_LINKS if "{{" in value or "{%" in value else len([p for p in value.split(",") if p.strip()])
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        return 1
    return sum(_count(item) for item in value)


def materialized(value: Any) -> Any:
    """
    ``value`` with a lazy XCom sequence (a mapped task's output) read in one call, as a list.

    Iterating Airflow 3's ``LazyXComSequence`` fetches item after item until the API server answers
    404, which Airflow's client logs at ERROR level ("XCom not found ... offset=N",
    ``airflow/sdk/api/client.py``, ``get_sequence_item``) in every successful run; a slice is one call.
    """
    if isinstance(value, (str, bytes, Mapping, list, tuple)) or not isinstance(value, Sequence):
        return value
    return list(value[:])


# -- what the tasks stored, read where the page is served ------------------------------------------------


def stored_videos(source: str, operator: Any, ti_key: TaskInstanceKey) -> list[str | None]:
    """The video URLs a task instance stored in XCom (read from the metadata DB), in link order."""

    def own(key: str) -> Any:
        return _first(read_xcoms(ti_key.dag_id, ti_key.run_id, ti_key.map_index, task_ids=[ti_key.task_id], key=key))

    if source == SENSOR:
        return [_video_url(g) for g in _generations(own("return_value"))]
    if source == DOWNLOAD:
        return [_video_url(v) for v in _generations(own(DOWNLOADED_VIDEOS_XCOM_KEY))]
    url = own(VIDEO_URL_XCOM_KEY)
    if url:
        return [url]
    # Submitted without waiting: the video is in what a downstream task that waited for it returned.
    generation_id = own(GENERATION_ID_XCOM_KEY)
    downstream = sorted(getattr(operator, "downstream_task_ids", None) or ())
    if not isinstance(generation_id, str) or not downstream:
        return []
    for value in read_xcoms(ti_key.dag_id, ti_key.run_id, None, task_ids=downstream):
        for generation in _generations(value):
            if isinstance(generation, Mapping) and generation.get("id") == generation_id:
                return [_video_url(generation)]
    return []


def read_xcoms(
    dag_id: str, run_id: str, map_index: int | None, *, task_ids: list[str], key: str = "return_value"
) -> list[Any]:
    """
    XCom values of a run, straight from the metadata DB (the webserver's or API server's view), as
    JSON: never deserialized into objects, as Airflow 3's own ``XComOperatorLink`` does not either.
    """
    from airflow.utils.session import create_session
    from sqlalchemy import select

    try:
        from airflow.models.xcom import XComModel as Model  # Airflow 3
    except ImportError:
        from airflow.models.xcom import XCom as Model  # type: ignore[no-redef]  # Airflow 2.11

    query = select(Model.value).where(
        Model.dag_id == dag_id, Model.run_id == run_id, Model.task_id.in_(task_ids), Model.key == key
    )
    if map_index is not None:
        query = query.where(Model.map_index == map_index)
    with create_session() as session:
        return [_decoded(value) for value in session.scalars(query.order_by(Model.task_id, Model.map_index))]


def _decoded(value: Any) -> Any:
    """An XCom value as Airflow 3 stores it: JSON, sometimes a JSON string holding JSON."""
    for _ in range(2):
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _first(values: list[Any]) -> Any:
    return values[0] if values else None


def _generations(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, Mapping) else list(value) if isinstance(value, list) else []


def _video_url(generation: Any) -> str | None:
    url = generation.get("video_url") if isinstance(generation, Mapping) else getattr(generation, "video_url", None)
    return url if isinstance(url, str) else None
