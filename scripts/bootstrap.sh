#!/usr/bin/env bash
# bootstrap.sh -- installs what pagellm's build and tests need, when missing.
# Idempotent. Debian packages through apt-get (as root, or through sudo);
# the tests' npm packages into tests/node/node_modules (from its lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config git clang libclang-rt-dev llvm
      libjansson-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libmicrohttpd-dev
      python3 python3-pip python3-setuptools python3-wheel python3-venv
      python3-numpy  # bench/gguf_write.py (the llama.cpp comparison)
      nodejs npm)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  # nodejs/npm may come from elsewhere (nodesource): accept the commands.
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${PL_SKIP_NODE:-0}" != 1 ] && [ -f tests/node/package.json ]; then
  # Reinstall only when the lock file differs from the one last installed.
  if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.pl-installed-lock; then
    echo "bootstrap: installing test npm packages"
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
    cp tests/node/package-lock.json tests/node/node_modules/.pl-installed-lock
  fi
fi
echo "bootstrap: ok"
