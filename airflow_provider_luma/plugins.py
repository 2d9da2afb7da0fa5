"""
The provider's Airflow plugin: the generate task's "Luma video" link, worked out when the page is viewed.

Airflow 3 computes operator links in the worker when a task ends (see
:mod:`airflow_provider_luma.operators.links`); a generate task that did not wait for its video ends
before the video exists. Only links declared by a plugin run in the API server
(``airflow/serialization/serialized_objects.py``: a plugin's link of the same name replaces the
operator's), so this plugin gives :class:`~airflow_provider_luma.operators.luma.LumaGenerateVideoOperator`
one that reads the video from the downstream sensor's XCom. Declared in the provider info
(``plugins``); it does nothing at import but import the operator.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import ClassVar

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_luma.operators.links import LumaVideoLink
from airflow_provider_luma.operators.luma import LumaGenerateVideoOperator


class GenerateVideoLink(LumaVideoLink):
    """The generate task's "Luma video" link, as the API server (Airflow 3) or webserver (2.11) works it out."""

    operators: ClassVar[list[type]] = [LumaGenerateVideoOperator]


#: Airflow 2.11 runs the operator's own link in the webserver already; there a plugin's link for an operator
#: would also break the page of every DAG that maps it (``serialized_objects.py`` looks up the
#: ``_task_module`` that 2.11 does not store for mapped operators: KeyError).
_AIRFLOW_3 = int(version("apache-airflow").split(".")[0]) >= 3


class LumaPlugin(AirflowPlugin):
    """Registers :class:`GenerateVideoLink` for the generate operator (Airflow 3)."""

    name = "luma"
    operator_extra_links = [GenerateVideoLink()] if _AIRFLOW_3 else []
