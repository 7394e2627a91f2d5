#!/usr/bin/env bash
# Install everything fsmount needs on a Debian machine: system packages (FUSE 3 and the
# tools the tests drive) and the Python package with its test extras, editable.
# Idempotent; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(fuse3 libfuse3-dev pkg-config gcc python3-dev ffmpeg rsync sqlite3 git curl rclone nginx-light attr)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PY=${PYTHON:-python3}
PIPFLAGS=()
# Debian's own python3 refuses system-wide pip installs (PEP 668); pyenv and venv pythons do not.
if [ -f "$($PY -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ] \
   && [ -z "${VIRTUAL_ENV:-}" ]; then
  PIPFLAGS+=(--break-system-packages)
fi
$SUDO "$PY" -m pip install -q --disable-pip-version-check "${PIPFLAGS[@]}" -e '.[test,server]'
echo "fsmount installed: $(command -v fsmount)"
