# Sourced by the scripts: makes (or reuses) .venv/airflow-$AIRFLOW_VERSION with the provider installed.
# Needs only python3 (>= 3.11) and pip; everything else comes from the package registry.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
PYTHON=${PYTHON:-python3}
VENV="$ROOT/.venv/airflow-$AIRFLOW_VERSION"
STAMP="$VENV/.installed"
want="$AIRFLOW_VERSION $(cat "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV (Airflow $AIRFLOW_VERSION)..." >&2
  "$PYTHON" -m venv "$VENV"
fi
# Airflow 3.0.x declares no upper bound on cadwyn, fastapi and universal-pathlib, and their current
# releases break it (every task start answers 422; ObjectStoragePath refuses file://): hold them at
# what 3.0 was released with.
pins=()
case "$AIRFLOW_VERSION" in
  3.0.*) pins=("cadwyn>=5.2.1,<5.5" "fastapi>=0.115,<0.117" "universal-pathlib>=0.2.2,<0.3") ;;
esac
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "Installing the provider with Airflow $AIRFLOW_VERSION into $VENV..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test,dev]" "apache-airflow==$AIRFLOW_VERSION" ${pins[@]+"${pins[@]}"} >&2
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
