# Sourced by scripts/test --all (and run by .ci/run): the system servers the production-shaped deployment tests
# start on loopback (tests/support/services.py): Debian's PostgreSQL (initdb, postgres) and redis-server.
# Idempotent and quiet: nothing happens when both are there. Installs with apt-get when root (or with
# passwordless sudo), without starting the packages' own services (a policy-rc.d that denies them, removed after:
# the tests start their own servers in temporary folders). LUMA_NO_APT=1 skips it; the tests then say what is missing.
have_system_packages() {
  command -v redis-server >/dev/null 2>&1 || return 1
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
install_system_packages() {
  have_system_packages && return 0
  if [ -n "${LUMA_NO_APT:-}" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL or redis-server missing (apt-get install -y postgresql redis-server): the production tests will fail." >&2
    return 0
  fi
  local as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then as_root=(sudo -n); else
      echo "PostgreSQL or redis-server missing and not root: sudo apt-get install -y postgresql redis-server" >&2
      return 0
    fi
  fi
  echo "Installing postgresql and redis-server (apt-get)..." >&2
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$guard" >/dev/null && "${as_root[@]}" chmod +x "$guard"
  fi
  local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600)
  local status=0
  if ! "${apt[@]}" install -y postgresql redis-server >/dev/null 2>&1; then
    # A fresh machine may have no package lists yet.
    if ! { "${apt[@]}" update >/dev/null 2>&1 && "${apt[@]}" install -y postgresql redis-server >/dev/null; }; then
      status=1
    fi
  fi
  if [ -n "$guard" ]; then "${as_root[@]}" rm -f "$guard"; fi
  return $status
}
