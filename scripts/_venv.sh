# Sourced by the scripts: makes (or reuses) .venv/airflow-$AIRFLOW_VERSION with the provider installed,
# every other package held at the versions of constraints/airflow-$AIRFLOW_VERSION.txt (the lock).
# Needs only python3 (>= 3.11) and pip; everything else comes from the package registry.
#   LUMA_UNLOCKED=1  resolve afresh, ignoring the lock (what scripts/lock does)
#   LUMA_VENV=DIR    another venv folder (scripts/lock builds its fresh venvs there)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
PYTHON=${PYTHON:-python3}
VENV=${LUMA_VENV:-"$ROOT/.venv/airflow-$AIRFLOW_VERSION"}
STAMP="$VENV/.installed"
LOCK="$ROOT/constraints/airflow-$AIRFLOW_VERSION.txt"
# Airflow 3.0.x declares no upper bound on cadwyn, fastapi and universal-pathlib, and their current
# releases break it (every task start answers 422; ObjectStoragePath refuses file://): hold them at
# what 3.0 was released with. The lock holds them too; these pins are what `scripts/lock` resolves with.
pins=()
case "$AIRFLOW_VERSION" in
  3.0.*) pins=("cadwyn>=5.2.1,<5.5" "fastapi>=0.115,<0.117" "universal-pathlib>=0.2.2,<0.3") ;;
esac
# The production-shaped deployment tests (PostgreSQL, Redis, Celery) run on the newest Airflow line only (3.3+):
# their packages are installed, and locked, there alone.
extras=test,dev
case "$AIRFLOW_VERSION" in
  3.[3-9].* | 3.[1-9][0-9].*) extras=test,dev,test-stack ;;
esac
constraints=()
if [ -n "${LUMA_UNLOCKED:-}" ]; then
  lock_hash=unlocked
elif [ -f "$LOCK" ]; then
  constraints=(-c "$LOCK")
  lock_hash=$(sha1sum < "$LOCK" | cut -c1-12)
elif [ -n "${CI:-}" ]; then
  echo "No lock for Airflow $AIRFLOW_VERSION ($LOCK): CI installs only locked environments (bash scripts/lock $AIRFLOW_VERSION)." >&2
  exit 1
else
  echo "No lock for Airflow $AIRFLOW_VERSION ($LOCK): resolving against today's registry (bash scripts/lock $AIRFLOW_VERSION writes one)." >&2
  lock_hash=none
fi
# Whatever decides the installed set is in the stamp: a change to any of them rebuilds the venv from scratch.
want="$AIRFLOW_VERSION extras=$extras pyproject=$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12) lock=$lock_hash pins=${pins[*]+${pins[*]}} python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  if [ -e "$VENV" ]; then
    echo "Rebuilding $VENV (its stamp differs from: $want)..." >&2
    rm -rf "$VENV"
  fi
  echo "Creating $VENV (Airflow $AIRFLOW_VERSION)..." >&2
  "$PYTHON" -m venv "$VENV"
  echo "Installing the provider with Airflow $AIRFLOW_VERSION into $VENV..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade ${constraints[@]+"${constraints[@]}"} pip >&2
  "$VENV/bin/python" -m pip install -q ${constraints[@]+"${constraints[@]}"} -e "$ROOT[$extras]" \
    "apache-airflow==$AIRFLOW_VERSION" ${pins[@]+"${pins[@]}"} >&2
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
