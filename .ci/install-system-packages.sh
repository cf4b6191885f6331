#!/usr/bin/env bash
# System packages the tests need (Debian/Ubuntu): PostgreSQL 15 + PostGIS 3 for the real STAC API fixture
# (tests/stac_api.py). Idempotent: does nothing (no apt-get update) when everything is already installed.
# Run as root (or with sudo). The Debian package starts no cluster we use: the tests run their own initdb.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PACKAGES=(postgresql "postgresql-${PG_MAJOR}" "postgresql-${PG_MAJOR}-postgis-3")
# chromium: the dashboard and `scarmon ui` browser tests (driven by Python playwright at /usr/bin/chromium).
PACKAGES+=(chromium)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system packages already installed: ${PACKAGES[*]}"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "need root to install: ${missing[*]}" >&2; exit 1
    fi
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

# Installing postgresql starts a cluster service on port 5432 on a machine with a running init; the tests do
# not use it. Report the binaries the fixture will find.
echo "PostgreSQL binaries: $(/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config --bindir 2>/dev/null || echo '?')"
