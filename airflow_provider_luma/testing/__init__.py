"""Testing helpers for the Luma provider: a local simulator of the Luma video API.

See :mod:`airflow_provider_luma.testing.simulator` for what it serves and how its parts fit,
:mod:`airflow_provider_luma.testing.options` for its options, :mod:`airflow_provider_luma.testing.client`
for driving one in another process, and :mod:`airflow_provider_luma.testing.pytest_plugin` for the
``luma_simulator`` fixture.
"""

from airflow_provider_luma.testing.client import SimulatorClient
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
from airflow_provider_luma.testing.video import ASPECT_RATIOS, CLIP_PATHS, clip_path

__all__ = [
    "API_PREFIX",
    "ASPECT_RATIOS",
    "CLIP_PATHS",
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
    "SimulatorClient",
    "clip_path",
]
