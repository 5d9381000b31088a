#!/usr/bin/env bash
# Installs what keeplb's build, demo and tests need on a fresh Debian machine (as root).
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ -x /usr/sbin/keepalived ] || command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v cc >/dev/null 2>&1 || need+=(gcc)
# Health-check tests: nginx serves HTTP and HTTPS real servers, openssl makes their
# certificate (and plays a TLS server in the SSL_GET probe tests).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing ${need[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: this machine needs a Rust toolchain (rustup)" >&2
    exit 1
fi
