#!/usr/bin/env bash
# Shifts distributor traffic between v1 and v2: update-route with new weights, e.g.
#   deploy/shift.sh 90 10   deploy/shift.sh 50 50   deploy/shift.sh 0 100
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: deploy/shift.sh [--endpoint-url URL] V1_WEIGHT V2_WEIGHT   (each 0-100, not both 0)"
}
parse_common_args "$@"
[ ${#ARGS[@]} -eq 2 ] || { usage >&2; exit 2; }
v1=${ARGS[0]} v2=${ARGS[1]}
for w in "$v1" "$v2"; do
    [[ "$w" =~ ^[0-9]+$ ]] && [ "$w" -le 100 ] || die "weight '$w' is not a whole number from 0 to 100"
done
[ "$v1" -gt 0 ] || [ "$v2" -gt 0 ] || die "both weights are 0: no version would get traffic"
require_tools
use_self_hosted

route_file=$MESH_DIR/routes/distributor.json
spec=$(python3 - "$route_file" "$v1" "$v2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
weights = {"distributor-v1": int(sys.argv[2]), "distributor-v2": int(sys.argv[3])}
targets = doc["spec"]["httpRoute"]["action"]["weightedTargets"]
for t in targets:
    t["weight"] = weights.get(t["virtualNode"], t["weight"])
doc.pop("tags", None)
print(json.dumps(doc))
PY
)
say "update-route $(field "$route_file" routeName): distributor-v1 $v1, distributor-v2 $v2"
awscli appmesh update-route --cli-input-json "$spec" \
    --query 'route.spec.httpRoute.action.weightedTargets[].[virtualNode,weight]' --output text
