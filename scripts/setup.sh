#!/usr/bin/env bash
# One-time machine setup, idempotent and quiet when nothing is missing:
# Debian packages (crit from the criu package, iproute2, openssl, runc,
# busybox-static and podman for the container tests), npm
# packages and the build. Called by .ci/run and by `npm test` / `npm run demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
need_pkgs=()
command -v crit >/dev/null 2>&1 || need_pkgs+=(criu)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
[[ -x /bin/busybox ]] || need_pkgs+=(busybox-static)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)  # real-program tests (test/integration/real-servers.test.ts)
command -v nft >/dev/null 2>&1 || [[ -x /usr/sbin/nft ]] || need_pkgs+=(nftables)  # network lock of dumped TCP connections
need_podman=0
command -v podman >/dev/null 2>&1 || need_podman=1  # test/integration/podman.test.ts (installed without its recommends)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install ${need_pkgs[*]}" >&2; exit 1
  fi
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if ((need_podman)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install podman" >&2; exit 1
  fi
  echo "setup: installing podman"
  export DEBIAN_FRONTEND=noninteractive
  ((${#need_pkgs[@]})) || apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman >/dev/null
fi
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
elif [[ ! -f build/Release/lazy_restore.node || ! -d dist ]]; then
  bash scripts/build.sh
fi
# Rebuild when sources are newer than the outputs (developer loop).
if [[ -n "$(find plugin test bench examples proto -newer dist/plugin/index.js -name '*.ts' -print -quit 2>/dev/null)" ]] \
   || [[ -n "$(find native examples -newer build/Release/lazy_restore.node \( -name '*.cc' -o -name '*.h' -o -name '*.c' \) -print -quit 2>/dev/null)" ]]; then
  bash scripts/build.sh
fi
