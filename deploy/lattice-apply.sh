#!/usr/bin/env bash
# Applies the inputs `gophermesh export lattice` wrote next to it, in their order: each
# NNN-CALL--REF.json is `aws vpc-lattice CALL --cli-input-json`, after each value that is
# `@{REF}` is replaced by the id an earlier call returned and each that is `${VPC_ID}` by
# the environment's (whole values only: a name from the mesh is never substituted into). Stops at the
# first refused call and prints what it created so far; what it created is kept in
# created.txt (REF=id). AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_VPC_LATTICE are honoured by
# the AWS CLI. It only creates (run twice, it makes everything twice): `gophermesh export
# lattice --apply` compares with what is there, and `--teardown` deletes it.
set -euo pipefail
cd "$(dirname "$0")"
: "${VPC_ID:?set VPC_ID to the VPC of the target groups}"
command -v aws >/dev/null || { echo "error: the AWS CLI is not installed (pip install awscli)" >&2; exit 1; }
refs=created.txt
: >"$refs"
input=$(mktemp)
trap 'rm -f "$input"' EXIT
for f in [0-9][0-9][0-9]-*.json; do
    base=${f%.json}
    call=${base#*-}
    call=${call%%--*}
    ref=${base#*--}
    python3 - "$f" "$refs" >"$input" <<'PY'
import json
import os
import re
import sys

value = json.load(open(sys.argv[1], encoding="utf-8"))
refs = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2], encoding="utf-8") if "=" in l)


def sub(v):
    if isinstance(v, dict):
        return {k: sub(x) for k, x in v.items()}
    if isinstance(v, list):
        return [sub(x) for x in v]
    if v == "${VPC_ID}":
        return os.environ["VPC_ID"]
    m = re.fullmatch(r"@\{([a-z0-9-]+)\}", v) if isinstance(v, str) else None
    if m:
        if m.group(1) not in refs:
            sys.exit(f"{sys.argv[1]}: @{{{m.group(1)}}} names nothing created before it")
        return refs[m.group(1)]
    return v


print(json.dumps(sub(value)))
PY
    if ! id=$(AWS_PAGER="" aws vpc-lattice "$call" --cli-input-json "file://$input" --query id --output text); then
        echo "error: $f: aws vpc-lattice $call was refused; created so far (also in created.txt):" >&2
        cat "$refs" >&2
        exit 1
    fi
    echo "$ref=$id" >>"$refs"
    echo "==> $call $ref: $id" >&2
done
echo "done: $(wc -l <"$refs") resources (ids in created.txt)" >&2
