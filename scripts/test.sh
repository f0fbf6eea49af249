#!/usr/bin/env bash
# Sets up everything the tests need, builds the workspace, and runs every test.
# Usage: scripts/test.sh [extra cargo test arguments, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
export PATH="$PWD/.venv/bin:$PATH"
echo "==> building the workspace" >&2
cargo build --workspace --bins --quiet
echo "==> building the release binaries the container images are made from" >&2
cargo build --release --workspace --bins --quiet
echo "==> running the tests" >&2
cargo test --workspace --no-fail-fast "$@"
