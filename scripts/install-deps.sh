#!/usr/bin/env bash
# Installs the Debian 12 packages corral needs, and only those that are missing.
# Runs `apt-get update` only when something has to be installed. Needs root then.
# With --bench, also the programs the benchmarks use (wrk, nginx).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# command that must exist -> Debian package that provides it
declare -A NEEDS=(
  [python3]=python3
  [runc]=runc
  [mmdebstrap]=mmdebstrap
  [ip]=iproute2
  [nft]=nftables
  [newuidmap]=uidmap
  [podman]=podman
  [buildah]=buildah  # Dockerfile templates (corral.runtime.builder)
  [mkfs.ext4]=e2fsprogs
  [losetup]=util-linux
  [node]=nodejs
  [npm]=npm
  [chromium]=chromium  # headless browser of the gateway's preview URL tests
)
# --bench: also what bench/ runs beside corral (bench_gateway.py's load and reference)
if [[ "${1:-}" == "--bench" ]]; then
  NEEDS[wrk]=wrk
  NEEDS[nginx]=nginx
fi

missing=()
for cmd in "${!NEEDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDS[$cmd]}")
done
# `python3 -m venv` needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# mmdebstrap verifies the Debian archive with these.
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
# The store's tests on PostgreSQL start a throwaway server from these binaries.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)

if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install-deps: installing ${missing[*]}"
  if [[ $EUID -ne 0 ]]; then
    echo "install-deps: root is needed to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

# The TypeScript SDK needs the WebSocket client Node has had since 20.10.
node_version=$(node -p 'process.versions.node')
IFS=. read -r major minor _ <<<"$node_version"
if ((major < 20 || (major == 20 && minor < 10))); then
  echo "install-deps: warning: Node $node_version is older than 20.10; the TypeScript SDK tests need a newer Node" >&2
fi
