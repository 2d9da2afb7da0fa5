"""Testing helpers for the Luma provider: a local simulator of the Luma video API.

See :mod:`airflow_provider_luma.testing.simulator` for what it serves and how to script it,
and :mod:`airflow_provider_luma.testing.pytest_plugin` for the ``luma_simulator`` fixture.
"""

from airflow_provider_luma.testing.simulator import (
    API_PREFIX,
    DEFAULT_API_KEY,
    ENDPOINTS,
    FAULT_KINDS,
    HOLD_PARAMS,
    LOG_ENDPOINTS,
    MULTI_SHAPES,
    SAMPLE_VIDEO_PATH,
    STATES,
    UNIVERSAL_MODELS,
    UNIVERSAL_PATH,
    LumaSimulator,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "FAULT_KINDS",
    "HOLD_PARAMS",
    "LOG_ENDPOINTS",
    "MULTI_SHAPES",
    "SAMPLE_VIDEO_PATH",
    "STATES",
    "UNIVERSAL_MODELS",
    "UNIVERSAL_PATH",
    "LumaSimulator",
]
