"""
Where the operators' videos go in Airflow's data-aware scheduling and in OpenLineage.

**Assets.** A downloaded video's file is only known at run time, so the download operator reports it
through its outlet events: a fixed :class:`Asset` the user declares (e.g. the destination folder) gets
the run's videos as its event's extra, and each :class:`AssetAlias` gets one event per video, on the
file's own Asset. On Airflow 2.11 the same classes are ``Dataset`` and ``DatasetAlias`` (through
``airflow.providers.common.compat``). :func:`triggering_videos` reads the extras back in a consumer.

**OpenLineage.** :func:`generate_lineage` and :func:`download_lineage` build what the operators'
``get_openlineage_facets_on_complete`` return. ``apache-airflow-providers-openlineage`` is optional
(the ``openlineage`` extra): it is imported only inside these functions.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.providers.common.compat.sdk import Asset, AssetAlias, ObjectStoragePath

from airflow_provider_luma import outcome
from airflow_provider_luma.create_requests import CreateRequest
from airflow_provider_luma.models import Generation

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

#: Key of the generate operator's result holding :func:`request_summary` (the request, without URLs).
REQUEST_SUMMARY_KEY = "request_summary"
#: What a request summary keeps of the create body: nothing that can hold a URL or a credential.
SUMMARY_FIELDS = ("prompt", "model", "duration", "aspect_ratio", "resolution")
#: The generate operator's parameters that name inputs: images, source generations, a source video.
INPUT_FIELDS = ("keyframes", "image_url", "last_image_url", "source_video_url")
#: OpenLineage namespace of generations when the connection's host cannot be read.
DEFAULT_API_NAMESPACE = "aimlapi://api.aimlapi.com"
#: Name of the operators' custom OpenLineage run facet.
RUN_FACET_NAME = "luma"
#: Object stores whose OpenLineage namespace is ``{scheme}://{bucket}`` and name the key.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "wasb", "wasbs", "oss"})


def request_summary(request: CreateRequest) -> dict[str, Any]:
    """
    The small, key-free summary of a create request a generate task keeps in its result.

    Only :data:`SUMMARY_FIELDS` (prompt, model, duration, aspect ratio, resolution): never the
    keyframe, image, video or callback URLs, which are often pre-signed.

    :param request: The checked create request.
    """
    return {name: request.body[name] for name in SUMMARY_FIELDS if request.body.get(name) is not None}


def summary_of(generation: Generation) -> dict[str, Any]:
    """
    What is known of the request that made ``generation``: the generate task's ``request_summary``
    if the generation dict came from it, else the fields of the API's request echo (a fetch by id).
    """
    for source in (generation.raw.get(REQUEST_SUMMARY_KEY), generation.raw.get("request")):
        if isinstance(source, Mapping):
            return {name: source[name] for name in SUMMARY_FIELDS if source.get(name) is not None}
    return {}


@dataclass(frozen=True)
class WrittenVideo:
    """
    A video the download operator wrote.

    :param generation: The completed generation it came from.
    :param target: Where it was written: a ``pathlib.Path`` or an ``ObjectStoragePath``.
    :param size: Its size in bytes (``None`` if the store could not say).
    """

    generation: Generation
    target: Any
    size: int | None

    @property
    def uri(self) -> str:
        """The file's URI: ``file:///abs/path.mp4``, ``s3://bucket/key.mp4`` ... (no connection id in it)."""
        return file_uri(self.target)

    @property
    def model(self) -> str | None:
        """The model, as the API reported it or the generate task asked for it."""
        model = self.generation.raw.get("model")
        return model if isinstance(model, str) and model else summary_of(self.generation).get("model")

    def extra(self) -> dict[str, Any]:
        """The asset event's extra for this video: ids, model, file URI and size, prompt and duration if known."""
        summary = summary_of(self.generation)
        extra: dict[str, Any] = {"generation_id": self.generation.id, "model": self.model, "uri": self.uri}
        if _is_local(self.target):
            extra["path"] = local_path(self.target)
        extra["size"] = self.size
        for name in ("prompt", "duration"):
            if name in summary:
                extra[name] = summary[name]
        return outcome.storable(extra)  # stored in the metadata DB: made storable, redacted


def local_path(target: Any) -> str:
    """The absolute path of a local file (a path or a ``file://`` ``ObjectStoragePath``)."""
    if isinstance(target, ObjectStoragePath):  # before os.PathLike: on Airflow 2 it is a pathlib.Path too
        return str(target.path)
    return os.path.abspath(os.fspath(target))


def _is_local(target: Any) -> bool:
    return not isinstance(target, ObjectStoragePath) or target.protocol in ("file", "local")


def file_uri(target: Any) -> str:
    """
    The URI of a written file as an Airflow Asset names it: ``file://`` and the absolute path for a
    local file, ``{scheme}://{bucket}/{key}`` for object storage. An ``ObjectStoragePath``'s
    connection id (``s3://aws_default@bucket/...``) is left out: it names a credential, not the data.
    """
    if _is_local(target):
        return "file://" + quote(local_path(target))
    parts = urlsplit(str(target))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{quote(parts.path)}"


def emit_asset_events(context: Mapping[str, Any], outlets: Iterable[Any], videos: list[WrittenVideo]) -> None:
    """
    Attach the videos to the task's outlet events (nothing happens without ``outlet_events``).

    Each :class:`Asset` in ``outlets`` gets :func:`folder_extra` as its event's extra (merged into
    what the task may have set); each :class:`AssetAlias` gets one event per video on the file's own
    Asset, with :meth:`WrittenVideo.extra`.

    :param context: The task's context.
    :param outlets: The task's outlets.
    :param videos: What the task wrote.
    """
    events = context.get("outlet_events")
    if events is None or not videos:
        return
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            for video in videos:
                events[outlet].add(Asset(video.uri), extra=video.extra())
        elif isinstance(outlet, Asset):
            events[outlet].extra.update(folder_extra(videos))


def folder_extra(videos: list[WrittenVideo]) -> dict[str, Any]:
    """
    The extra of a fixed outlet Asset's event: ``videos``, one :meth:`WrittenVideo.extra` per video;
    with one video (the usual case), its fields are also at the top level (``extra["generation_id"]``).
    """
    extras = [video.extra() for video in videos]
    return {**(extras[0] if len(extras) == 1 else {}), "videos": extras}


def triggering_videos(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """
    The videos whose asset events triggered this run, for a DAG scheduled on a download's outlet.

    Reads ``triggering_asset_events`` (Airflow 3) or ``triggering_dataset_events`` (Airflow 2.11);
    each video once (by URI), in event order, as :meth:`WrittenVideo.extra` wrote it. Events that
    are not a Luma download's are skipped; a run not triggered by assets gets ``[]``.

    :param context: The consumer task's context.
    """
    events: Any = context.get("triggering_asset_events")
    if events is None:
        events = context.get("triggering_dataset_events") or {}
    videos: dict[str, dict[str, Any]] = {}
    for key in events:
        for event in events[key]:
            extra = getattr(event, "extra", None) or {}
            listed = extra.get("videos")
            for item in listed if isinstance(listed, list) else [extra]:
                if isinstance(item, Mapping) and item.get("generation_id") and item.get("uri"):
                    videos.setdefault(str(item["uri"]), dict(item))
    return list(videos.values())


# ---------------------------------------------------------------------------------------------- OpenLineage


def api_namespace(base_url: str | None) -> str:
    """The OpenLineage namespace of generations: ``aimlapi://`` and the connection's host (and port)."""
    host = urlsplit(base_url).netloc.rpartition("@")[2] if base_url else ""
    return f"aimlapi://{host}" if host else DEFAULT_API_NAMESPACE


def url_dataset_name(value: str) -> tuple[str, str] | None:
    """
    ``(namespace, name)`` of a location by OpenLineage's naming rules: object stores
    ``{scheme}://{bucket}`` and the key; local files ``file`` (or ``file://{host}``) and the path;
    anything else ``{scheme}://{host}`` and the path. Never the query, the fragment or user info (a
    pre-signed URL's signature stays out of lineage). ``None`` for what is not a URL.
    """
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path):
        return None
    host = parts.netloc.rpartition("@")[2]
    if parts.scheme == "file":
        return (f"file://{host}" if host else "file"), parts.path
    if parts.scheme in _BUCKET_SCHEMES:
        return f"{parts.scheme}://{host}", parts.path.lstrip("/")
    return f"{parts.scheme}://{host}", parts.path or "/"


def generate_lineage(
    namespace: str, request: CreateRequest | None, inputs: Mapping[str, Any], result: Mapping[str, Any] | None
) -> OperatorLineage:
    """
    The lineage of a generate task: its inputs (keyframe images and generations, Ray 3.2's first and
    last frames and source video), the generation it created, and a ``luma`` run facet with the
    prompt, model and duration.

    :param namespace: :func:`api_namespace` of the connection.
    :param request: The checked create request, if it could be rebuilt.
    :param inputs: The operator's rendered ``keyframes``, ``image_url``, ``last_image_url`` and
        ``source_video_url``.
    :param result: The task's result (the generation dict), if it got that far.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    datasets: list[Any] = []
    keyframes = inputs.get("keyframes")
    frames = list(keyframes.values()) if isinstance(keyframes, Mapping) else []
    for frame in [*frames, inputs.get("image_url"), inputs.get("last_image_url"), inputs.get("source_video_url")]:
        dataset = _input_dataset(namespace, frame)
        if dataset is not None and dataset not in datasets:
            datasets.append(dataset)
    outputs = []
    generations: list[dict[str, Any]] = []
    if result and result.get("id"):
        generation = Generation.from_dict(result)
        outputs.append(Dataset(namespace=namespace, name=generation.id))
        generations.append(_facet_entry(generation, request_summary(request) if request else {}))
    elif request is not None:
        generations.append(request_summary(request))
    return OperatorLineage(
        inputs=datasets,
        outputs=outputs,
        run_facets={RUN_FACET_NAME: _run_facet_class()(generations=outcome.storable(generations))},
    )


def download_lineage(namespace: str, videos: list[WrittenVideo]) -> OperatorLineage:
    """
    The lineage of a download task: the generations as inputs, each written file as an output
    (named by OpenLineage's rules, with its size), and a ``luma`` run facet per video.

    :param namespace: :func:`api_namespace` of the connection.
    :param videos: What the task wrote.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs, outputs, generations = [], [], []
    for video in videos:
        generation_dataset = Dataset(namespace=namespace, name=video.generation.id)
        if generation_dataset not in inputs:
            inputs.append(generation_dataset)
        file_namespace, file_name = url_dataset_name(video.uri) or ("file", video.uri)
        statistics = OutputStatisticsOutputDatasetFacet(rowCount=None, size=video.size, fileCount=1)
        outputs.append(
            OutputDataset(namespace=file_namespace, name=file_name, outputFacets={"outputStatistics": statistics})
        )
        generations.append({**_facet_entry(video.generation, summary_of(video.generation)), "uri": video.uri})
    return OperatorLineage(
        inputs=inputs,
        outputs=outputs,
        run_facets={RUN_FACET_NAME: _run_facet_class()(generations=outcome.storable(generations))},
    )


def _facet_entry(generation: Generation, summary: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": generation.id, **summary}
    model = generation.raw.get("model")
    if isinstance(model, str) and model:
        entry["model"] = model
    if generation.api is not None:
        entry["api"] = generation.api.value
    return entry


def _input_dataset(namespace: str, value: Any) -> Any:
    """A keyframe, frame image or source video as an OpenLineage input (``None``: nothing usable)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    if isinstance(value, Generation):
        value = value.to_dict()
    if isinstance(value, Mapping):
        if value.get("type") == "image":
            value = value.get("url")
        elif value.get("id") and value.get("type") in (None, "generation"):
            return Dataset(namespace=namespace, name=str(value["id"]))
        else:
            return None
    if not isinstance(value, str):
        return None
    named = url_dataset_name(value)
    return Dataset(namespace=named[0], name=named[1]) if named else None


@functools.cache
def _run_facet_class() -> type:
    """The ``luma`` run facet class, defined on first use: it needs the OpenLineage client."""
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class LumaRunFacet(RunFacet):  # type: ignore[misc]
        """
        The Luma generations of a task run.

        :param generations: One entry per generation: ``id``, and when known ``prompt``, ``model``,
            ``duration``, ``aspect_ratio``, ``resolution``, ``api``; a download's also ``uri``.
        """

        generations: list[dict[str, Any]] = attrs.field(factory=list)

    return LumaRunFacet
