"""Apache Airflow provider for Luma AI's Dream Machine video generation (through the AI/ML API)."""

from __future__ import annotations

from typing import Any

from airflow_provider_luma.connection_form import provider_connection_form
from airflow_provider_luma.version import __version__

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """What Airflow's provider manager reads: the hook, connection type, form and the rest."""
    return {
        "package-name": "airflow-provider-luma",
        "name": "Luma AI",
        "description": "Generate videos with Luma AI's Dream Machine (through the AI/ML API) from Airflow.",
        "versions": [__version__],
        "hooks": [
            {"integration-name": "Luma AI", "python-modules": ["airflow_provider_luma.hooks.luma"]},
        ],
        "triggers": [
            {"integration-name": "Luma AI", "python-modules": ["airflow_provider_luma.triggers.luma"]},
        ],
        "sensors": [
            {"integration-name": "Luma AI", "python-modules": ["airflow_provider_luma.sensors.luma"]},
        ],
        "operators": [
            {"integration-name": "Luma AI", "python-modules": ["airflow_provider_luma.operators.luma"]},
        ],
        "integrations": [
            {
                "integration-name": "Luma AI",
                "external-doc-url": "https://docs.aimlapi.com/",
                # The provider's own guides: pages of its docs site (docs/, built by scripts/docs).
                "how-to-guide": [
                    "/docs/connection.md",
                    "/docs/models-and-endpoints.md",
                    "/docs/hook.md",
                    "/docs/sensor-and-trigger.md",
                    "/docs/operators.md",
                    "/docs/simulator.md",
                    "/docs/troubleshooting.md",
                ],
                "tags": ["ai"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "luma",
                "hook-class-name": "airflow_provider_luma.hooks.luma.LumaHook",
                "hook-name": "Luma AI",
                # Airflow 3.2+ builds the connection form from here; older versions call
                # LumaHook.get_ui_field_behaviour(). Both come from connection_form.
                **provider_connection_form(),
            }
        ],
        # The "Luma video" buttons (operators/links.py); the old path keeps DAGs serialized by 0.2 readable.
        "extra-links": [
            "airflow_provider_luma.operators.links.LumaVideoLink",
            "airflow_provider_luma.plugins.GenerateVideoLink",
            "airflow_provider_luma.operators.luma.LumaVideoLink",
        ],
        # Runs the generate task's link in the API server (Airflow 3 runs the others in the worker).
        "plugins": [{"name": "luma", "plugin-class": "airflow_provider_luma.plugins.LumaPlugin"}],
    }
