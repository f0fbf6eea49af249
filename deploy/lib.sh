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
SELF_HOSTED=
# The self-hosted control plane (deploy/control-plane.sh).
STATE_TABLE=${STATE_TABLE:-gophermesh-state}
CONTROL_PLANE_HOST=${CONTROL_PLANE_HOST:-xds.$NAMESPACE}
CONTROL_PLANE_SERVICE=gophermesh-control-plane
CONTROL_PLANE_LB=gophermesh-control-plane
API_SECRET=${API_SECRET:-gophermesh/api-credentials}
XDS_PORT=15010

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
            --self-hosted) SELF_HOSTED=1; shift ;;
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
# are honoured by the CLI itself) and no pager. App Mesh calls to a self-hosted control
# plane are signed with its API credentials (see use_self_hosted).
awscli() {
    if [ "$1" = appmesh ] && [ -n "${APPMESH_API_KEY_ID:-}" ]; then
        AWS_ACCESS_KEY_ID=$APPMESH_API_KEY_ID AWS_SECRET_ACCESS_KEY=$APPMESH_API_SECRET AWS_SESSION_TOKEN= \
            AWS_PAGER="" aws "${ENDPOINT_ARGS[@]+"${ENDPOINT_ARGS[@]}"}" "$@"
    else
        AWS_PAGER="" aws "${ENDPOINT_ARGS[@]+"${ENDPOINT_ARGS[@]}"}" "$@"
    fi
}

# The self-hosted control plane's App Mesh API credentials, from Secrets Manager.
api_credentials() {
    awscli secretsmanager get-secret-value --secret-id "$API_SECRET" --query SecretString --output text
}

# With --self-hosted: App Mesh calls go to the control plane deploy/control-plane.sh made
# (https://CONTROL_PLANE_HOST, unless AWS_ENDPOINT_URL_APP_MESH says otherwise), signed
# with its API credentials. With `optional` (teardown), a control plane that is already
# gone is not an error: APPMESH_API_KEY_ID stays empty.
use_self_hosted() {
    [ -n "$SELF_HOSTED" ] || return 0
    local json
    if ! json=$(api_credentials 2>/dev/null); then
        [ "${1:-}" = optional ] || die "no API credentials in secret $API_SECRET: run deploy/control-plane.sh first"
        say "no control plane credentials in $API_SECRET: the control plane is gone already"
        return 0
    fi
    APPMESH_API_KEY_ID=$(json_field "$json" access_key_id)
    APPMESH_API_SECRET=$(json_field "$json" secret_access_key)
    export AWS_ENDPOINT_URL_APP_MESH=${AWS_ENDPOINT_URL_APP_MESH:-https://$CONTROL_PLANE_HOST}
    say "App Mesh calls go to the self-hosted control plane at $AWS_ENDPOINT_URL_APP_MESH"
}

# Field $2 of JSON text $1.
json_field() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# The Cloud Map namespace's id, or None.
namespace_id() {
    awscli servicediscovery list-namespaces --query "Namespaces[?Name=='$NAMESPACE'].Id | [0]" --output text
}

# Creates the private DNS namespace in VPC_ID unless it exists.
ensure_namespace() {
    local op status
    if [ "$(namespace_id)" != "None" ] && [ -n "$(namespace_id)" ]; then
        say "  namespace $NAMESPACE exists"
        return
    fi
    : "${VPC_ID:?set VPC_ID to the VPC the namespace serves}"
    op=$(awscli servicediscovery create-private-dns-namespace --name "$NAMESPACE" --vpc "$VPC_ID" --query OperationId --output text)
    for _ in $(seq 60); do
        status=$(awscli servicediscovery get-operation --operation-id "$op" --query Operation.Status --output text)
        [ "$status" = SUCCESS ] && break
        [ "$status" = FAIL ] && die "creating namespace $NAMESPACE failed (operation $op)"
        sleep 2
    done
    say "  created namespace $NAMESPACE"
}

# The ARN of Cloud Map service $1 in the namespace, or None.
cloudmap_service_arn() {
    awscli servicediscovery list-services --filters "Name=NAMESPACE_ID,Values=$(namespace_id),Condition=EQ" \
        --query "Services[?Name=='$1'].Arn | [0]" --output text
}

# Creates the ECS cluster unless it is active.
ensure_cluster() {
    local status
    status=$(awscli ecs describe-clusters --clusters "$CLUSTER" --query 'clusters[0].status' --output text 2>/dev/null || true)
    if [ "$status" = ACTIVE ]; then
        say "  cluster $CLUSTER exists"
    else
        awscli ecs create-cluster --cluster-name "$CLUSTER" >/dev/null
        say "  created cluster $CLUSTER"
    fi
}

# The gophermesh binary: GOPHERMESH, else on PATH, else target/{release,debug}.
gophermesh_bin() {
    if [ -n "${GOPHERMESH:-}" ]; then echo "$GOPHERMESH"; return; fi
    if command -v gophermesh >/dev/null; then command -v gophermesh; return; fi
    for p in "$ROOT/target/release/gophermesh" "$ROOT/target/debug/gophermesh"; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    die "gophermesh not found: build it with 'cargo build -p gophermesh' or set GOPHERMESH"
}

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
