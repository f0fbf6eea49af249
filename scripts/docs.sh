#!/usr/bin/env bash
# Builds the book (docs/) into target/book with mdbook, installing mdbook first when it is
# missing. With --write, first rewrites the pages made from the code (the command-line
# reference, the App Mesh API coverage, the export table, the benchmark tables) by running
# the docs test in its writing mode; commit what it changes.
# Usage: scripts/docs.sh [--write]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
if [ "${1:-}" = "--write" ]; then
    echo "==> rewriting the pages made from the code" >&2
    cargo build --workspace --bins --quiet
    GOPHERMESH_DOCS_WRITE=1 cargo test --quiet -p tests --test docs
fi
echo "==> building the book into target/book" >&2
.tools/bin/mdbook build docs
echo "open target/book/index.html" >&2
