"""Apache Airflow provider for Luma AI's Dream Machine video generation (through the AI/ML API)."""

from __future__ import annotations

from typing import Any

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
                # Airflow 3.2+ builds the connection form from here; older versions call
                # LumaHook.get_ui_field_behaviour().
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API key"},
                    "placeholders": {"host": "https://api.aimlapi.com", "password": "your AI/ML API key"},
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (s)",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                        "description": "Read time-out of one call; keep it above the API's 30 s hold. Default 60.",
                    },
                    "max_retries": {
                        "label": "Retries per call",
                        "schema": {"type": ["integer", "null"], "minimum": 0},
                        "description": "Retries after 429, 5xx and dropped connections. Default 5.",
                    },
                    "ids_per_request": {
                        "label": "Ids per multi-fetch call",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                        "description": "How many generation ids one multi-fetch call carries. Default 6.",
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http to a remote host",
                        "schema": {"type": ["boolean", "null"]},
                        "description": "Sends the key in clear text: only for trusted networks.",
                    },
                },
            }
        ],
        "extra-links": ["airflow_provider_luma.operators.luma.LumaVideoLink"],
    }
