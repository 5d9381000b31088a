#!/usr/bin/env bash
# keeplb's demonstration: check and dump the example keepalived.conf, show what
# check-config says about a config full of tutorial mistakes, then a real failover
# between two keeplb directors in network namespaces on this machine (needs root): a VIP
# moved by VRRP, and a service on it balanced over two health-checked real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked --quiet --bin keeplb
keeplb=target/release/keeplb

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "keeplb check-config examples/keepalived.conf"
"$keeplb" check-config examples/keepalived.conf

step "keeplb dump-config -f examples/keepalived.conf -i backup   (the BACKUP director's view)"
"$keeplb" dump-config -f examples/keepalived.conf -i backup

step "keeplb check-config examples/tutorial-mistakes.conf"
status=0
"$keeplb" check-config examples/tutorial-mistakes.conf || status=$?
if [ "$status" = 0 ]; then
    echo "demo: expected tutorial-mistakes.conf to be rejected" >&2
    exit 1
fi
echo "(exit status $status, as expected: the configuration has errors)"

step "keeplb demo   (two directors, two real servers, a client; the master dies; VRRPv2, advert_int 1)"
"$keeplb" demo
