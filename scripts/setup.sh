#!/usr/bin/env bash
# Install everything fsmount needs on a Debian machine: system packages (FUSE 3 and the
# tools the tests drive) and the Python package with its test extras, editable.
# Idempotent; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# chromium + chromium-driver: the web UI tests drive Debian's browser (never a downloaded one);
# attr: getfattr/setfattr for the xattr tests; postgresql and the swift packages are the real
# engines the tests start (tests/engines.py): a throwaway PostgreSQL cluster and Swift with its
# s3api middleware, on loopback.
PKGS=(fuse3 libfuse3-dev pkg-config gcc python3-dev ffmpeg rsync sqlite3 git curl rclone nginx-light
      attr chromium chromium-driver postgresql swift swift-proxy swift-account swift-container
      swift-object python3-swift util-linux)
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
# Debian's packages start the swift and postgresql services where systemd runs; the tests
# start their own on free ports, so the system ones are not needed (and may not be running).

# PostgreSQL refuses to run as root: the tests' throwaway cluster runs as this system user.
if ! id -u fsmount-test >/dev/null 2>&1; then
  $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin fsmount-test
fi

$SUDO "$PY" -m pip install -q --disable-pip-version-check "${PIPFLAGS[@]}" -e '.[test,server]'
echo "fsmount installed: $(command -v fsmount)"
