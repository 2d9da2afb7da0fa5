"""Testing helpers for the Luma provider: a local simulator of the Luma video API.

See :mod:`airflow_provider_luma.testing.simulator` for what it serves and how to script it,
and :mod:`airflow_provider_luma.testing.pytest_plugin` for the ``luma_simulator`` fixture.
"""

from airflow_provider_luma.testing.simulator import (
    API_PREFIX,
    DEFAULT_API_KEY,
    ENDPOINTS,
    FAULT_KINDS,
    MULTI_SHAPES,
    SAMPLE_VIDEO_PATH,
    STATES,
    LumaSimulator,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "FAULT_KINDS",
    "MULTI_SHAPES",
    "SAMPLE_VIDEO_PATH",
    "STATES",
    "LumaSimulator",
]
