# Shared by the deploy scripts: argument parsing, the aws wrapper, and progress output.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MESH_DIR=${MESH_DIR:-$ROOT/mesh}
TASKDEFS_DIR=${TASKDEFS_DIR:-$ROOT/taskdefs}
MESH_NAME=${MESH_NAME:-gophermesh}
CLUSTER=${CLUSTER:-gophermesh}
NAMESPACE=${NAMESPACE:-gophers.local}
ENDPOINT_ARGS=()
SKIP=()

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --endpoint-url URL and --skip STEP are understood by every script; the rest is left in ARGS.
parse_common_args() {
    ARGS=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --endpoint-url) [ $# -ge 2 ] || die "--endpoint-url needs a URL"; ENDPOINT_ARGS=(--endpoint-url "$2"); shift 2 ;;
            --endpoint-url=*) ENDPOINT_ARGS=(--endpoint-url "${1#*=}"); shift ;;
            --skip) [ $# -ge 2 ] || die "--skip needs a step name"; SKIP+=("$2"); shift 2 ;;
            --skip=*) SKIP+=("${1#*=}"); shift ;;
            -h|--help) usage; exit 0 ;;
            *) ARGS+=("$1"); shift ;;
        esac
    done
}

skipped() {
    local s
    for s in "${SKIP[@]+"${SKIP[@]}"}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

# The AWS CLI with the endpoint override (AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>
# are honoured by the CLI itself) and no pager.
awscli() { AWS_PAGER="" aws "${ENDPOINT_ARGS[@]+"${ENDPOINT_ARGS[@]}"}" "$@"; }

# True when the describe call in "$@" finds the resource.
exists() { awscli "$@" >/dev/null 2>&1; }

# A copy of JSON file $1 without the fields given after it (e.g. tags, which update-* refuse).
without() {
    local file=$1; shift
    python3 - "$file" "$@" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    doc.pop(key, None)
print(json.dumps(doc))
PY
}

# A field of JSON file $1, by dotted path $2 (e.g. virtualNodeName).
field() {
    python3 - "$1" "$2" <<'PY'
import json, sys
value = json.load(open(sys.argv[1]))
for part in sys.argv[2].split("."):
    value = value[part]
print(value)
PY
}

require_tools() {
    command -v aws >/dev/null || die "the AWS CLI is not installed: pip install awscli (scripts/setup.sh puts it in .venv/bin)"
    command -v python3 >/dev/null || die "python3 is needed to read the JSON files"
}
