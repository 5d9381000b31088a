#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, then every test.
# Needs root: end-to-end tests build network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ "$(id -u)" != 0 ]; then
    echo "test: run as root (tests create network namespaces)" >&2
    exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
