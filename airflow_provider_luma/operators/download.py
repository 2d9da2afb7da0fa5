"""LumaDownloadVideoOperator: download finished videos to a local path or object storage."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, Context, ObjectStoragePath

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import LumaInputError
from airflow_provider_luma.hooks import download
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import Generation, normalize_generation_ids
from airflow_provider_luma.operators import lineage
from airflow_provider_luma.operators.links import (
    DOWNLOAD,
    DOWNLOADED_VIDEOS_XCOM_KEY,
    MAX_VIDEO_LINKS,
    LumaVideoLinks,
    materialized,
    video_links,
)
from airflow_provider_luma.operators.parse_checks import names_task
from airflow_provider_luma.sensors.luma import is_literal

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage


class LumaDownloadVideoOperator(LumaVideoLinks, BaseOperator):
    """
    Download the videos of completed Luma generations to a local path or object storage.

    Each video is streamed to a temporary name next to its destination and moved into place only
    when complete, so a failed download never leaves a partial file; re-running overwrites.

    Example::

        LumaDownloadVideoOperator(task_id="download", generation=wait.output, destination="/data/videos/")

    .. seealso::
        For more information on how to use this operator, see the provider's README.

    :param generation: What to download: a generation dict (e.g. the output of the generate task or
        of :class:`~airflow_provider_luma.sensors.luma.LumaGenerationSensor`), a generation id, or a
        list of either (also a mapped task's output). Ids are fetched first. (templated)
    :param destination: A local file path, a folder (an existing one, or a path ending in ``/``; the
        videos go to ``<folder>/<generation id>.mp4``), an ``ObjectStoragePath`` or a URL such as
        ``s3://bucket/videos/``. With several generations it is always a folder, created if missing.
        (templated)
    :param luma_conn_id: The Luma connection (used only to fetch generations given by id).
    :return: The written path as a string, or a list of them when ``generation`` was a list.
    """

    template_fields: Sequence[str] = ("generation", "destination", "luma_conn_id")
    ui_color = "#d9ccf7"
    luma_video_source = DOWNLOAD
    operator_extra_links = video_links(DOWNLOAD, MAX_VIDEO_LINKS)

    @names_task
    def __init__(
        self,
        *,
        generation: Any,
        destination: Any,
        luma_conn_id: str = LumaHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generation = generation
        self.destination = destination
        self.luma_conn_id = luma_conn_id
        self.expect_videos(generation)
        if is_literal(generation):
            self._items()
        if destination is None or (isinstance(destination, str) and not destination.strip()):
            raise LumaInputError("give a destination for the videos.")

    @cached_property
    def hook(self) -> LumaHook:
        """The Luma hook."""
        return LumaHook(luma_conn_id=self.luma_conn_id)

    def _items(self) -> tuple[list[Any], bool]:
        """The generations to download and whether several were asked for (a list, not one item)."""
        value = self.generation
        if isinstance(value, (Mapping, Generation)):
            return [value], False
        if isinstance(value, str):
            ids = normalize_generation_ids(value, parameter="generation")
            return ids, "," in value
        if isinstance(value, Iterable):
            items = list(materialized(value))  # a mapped task's lazy XCom sequence, read in one call
            if not items:
                raise LumaInputError("generation is an empty list: there is nothing to download.")
            for item in items:
                if isinstance(item, str):
                    normalize_generation_ids(item, parameter="generation")
                elif not isinstance(item, (Mapping, Generation)):
                    raise LumaInputError(
                        f"generation holds {type(item).__name__} {item!r}: expected generation dicts or ids."
                    )
            return items, True
        raise LumaInputError(
            f"generation is {type(value).__name__} {value!r}: expected a generation dict, an id, or a list of them."
        )

    def _target(self) -> tuple[Any, bool | None]:
        """The destination as a path object, and whether it is explicitly a folder."""
        destination = self.destination
        if isinstance(destination, str) and "://" in destination:
            # ObjectStoragePath drops a trailing "/", so remember that it meant a folder.
            folder = True if destination.endswith("/") else None
            return ObjectStoragePath(destination), folder
        if isinstance(destination, (str, os.PathLike)):
            return destination, (True if os.fspath(destination).endswith(("/", os.sep)) else None)
        return destination, None

    def execute(self, context: Context) -> str | list[str]:
        """Check the destination is writable, then download every video."""
        items, several = self._items()
        target, folder = self._target()
        into_folder = True if several else folder
        # Fail before fetching or downloading anything when the videos could not be written anyway.
        self.hook.check_video_destination(target, into_folder=into_folder)
        written = []
        for item in items:
            generation = download.resolve_generation(item, self.hook.get_generation)
            path = self.hook.download_video(generation, target, into_folder=into_folder)
            written.append(lineage.WrittenVideo(generation, path, _file_size(path)))
        self._written = written
        self.remember_videos(video.generation for video in written)
        # The source of each file (what the task's "Luma video" links open), and the file it went to.
        context["ti"].xcom_push(
            key=DOWNLOADED_VIDEOS_XCOM_KEY,
            value=outcome.storable(
                [
                    {"generation_id": v.generation.id, "video_url": v.generation.video_url, "path": str(v.target)}
                    for v in written
                ]
            ),
        )
        lineage.emit_asset_events(context, self.outlets or (), written)
        paths = [str(video.target) for video in written]
        return paths if several else paths[0]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        OpenLineage of the finished task: the generations as inputs, each written file as an output
        named by OpenLineage's rules (``file`` and the path; ``s3://bucket`` and the key ...) with its
        size, and the ``luma`` run facet (generation id, prompt, model, duration, file URI). Needs
        ``apache-airflow-providers-openlineage`` (the ``openlineage`` extra), which calls it.
        """
        return lineage.download_lineage(api_namespace(self.hook), getattr(self, "_written", []))


def _file_size(path: Any) -> int | None:
    """The size of a written file in bytes (``None`` if the store cannot say)."""
    try:
        return int(path.stat().st_size)
    except Exception:
        return None


def api_namespace(hook: LumaHook) -> str:
    """The OpenLineage namespace of the connection's generations; the service's own when it cannot be read."""
    try:
        return lineage.api_namespace(hook.settings.base_url)
    except Exception:
        return lineage.DEFAULT_API_NAMESPACE
