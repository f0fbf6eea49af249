#!/usr/bin/env bash
# Removes what deploy/walkthrough.sh created, in reverse order. What is already gone is
# skipped, so it is safe to run again. With --self-hosted, the mesh is deleted first
# (through the control plane, while it still runs) and the control plane of
# deploy/control-plane.sh last, with its table and secret.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { echo "usage: deploy/teardown.sh [--self-hosted] [--endpoint-url URL] [--skip STEP]..."; }
parse_common_args "$@"
[ ${#ARGS[@]} -eq 0 ] || die "unexpected argument: ${ARGS[0]}"
require_tools
use_self_hosted optional

families() { for f in "$TASKDEFS_DIR"/*.json; do field "$f" family; done; }
mesh_files() { [ ! -d "$MESH_DIR/$1" ] || find "$MESH_DIR/$1" -name '*.json' | sort -r; }

services() {
if ! skipped services; then
    say "ECS services"
    for family in $(families); do
        status=$(awscli ecs describe-services --cluster "$CLUSTER" --services "$family" --query 'services[0].status' --output text 2>/dev/null || true)
        if [ "$status" = ACTIVE ]; then
            awscli ecs delete-service --cluster "$CLUSTER" --service "$family" --force >/dev/null
            say "  deleted service $family"
        fi
    done
fi
}
cluster() {
if ! skipped cluster; then
    status=$(awscli ecs describe-clusters --clusters "$CLUSTER" --query 'clusters[0].status' --output text 2>/dev/null || true)
    if [ "$status" = ACTIVE ]; then
        awscli ecs delete-cluster --cluster "$CLUSTER" >/dev/null
        say "deleted cluster $CLUSTER"
    fi
fi
}
cloud_map() {
if ! skipped cloud-map; then
    ns=$(awscli servicediscovery list-namespaces --query "Namespaces[?Name=='$NAMESPACE'].Id | [0]" --output text)
    if [ -n "$ns" ] && [ "$ns" != None ]; then
        for id in $(awscli servicediscovery list-services --filters "Name=NAMESPACE_ID,Values=$ns,Condition=EQ" --query 'Services[].Id' --output text); do
            for instance in $(awscli servicediscovery list-instances --service-id "$id" --query 'Instances[].Id' --output text); do
                awscli servicediscovery deregister-instance --service-id "$id" --instance-id "$instance" >/dev/null
            done
            awscli servicediscovery delete-service --id "$id" >/dev/null
            say "deleted Cloud Map service $id"
        done
        awscli servicediscovery delete-namespace --id "$ns" >/dev/null
        say "deleted namespace $NAMESPACE"
    fi
fi
}
task_definitions() {
if ! skipped task-definitions; then
    for family in $(families); do
        for arn in $(awscli ecs list-task-definitions --family-prefix "$family" --status ACTIVE --query 'taskDefinitionArns[]' --output text); do
            awscli ecs deregister-task-definition --task-definition "$arn" >/dev/null
            say "deregistered $arn"
        done
    done
fi
}
delete_appmesh() { # kind, file, describe args...
    local kind=$1 file=$2; shift 2
    if exists appmesh "describe-$kind" "$@"; then
        awscli appmesh "delete-$kind" "$@" >/dev/null
        say "deleted $kind $(basename "$file" .json)"
    fi
}
mesh() {
if ! skipped gateway-routes; then
    for f in $(mesh_files gateway-routes); do
        delete_appmesh gateway-route "$f" --mesh-name "$MESH_NAME" --virtual-gateway-name "$(field "$f" virtualGatewayName)" --gateway-route-name "$(field "$f" gatewayRouteName)"
    done
fi
if ! skipped virtual-gateways; then
    for f in $(mesh_files virtual-gateways); do
        delete_appmesh virtual-gateway "$f" --mesh-name "$MESH_NAME" --virtual-gateway-name "$(field "$f" virtualGatewayName)"
    done
fi
if ! skipped virtual-services; then
    for f in $(mesh_files virtual-services); do
        delete_appmesh virtual-service "$f" --mesh-name "$MESH_NAME" --virtual-service-name "$(field "$f" virtualServiceName)"
    done
fi
if ! skipped routes; then
    for f in $(mesh_files routes); do
        delete_appmesh route "$f" --mesh-name "$MESH_NAME" --virtual-router-name "$(field "$f" virtualRouterName)" --route-name "$(field "$f" routeName)"
    done
fi
if ! skipped virtual-routers; then
    for f in $(mesh_files virtual-routers); do
        delete_appmesh virtual-router "$f" --mesh-name "$MESH_NAME" --virtual-router-name "$(field "$f" virtualRouterName)"
    done
fi
if ! skipped virtual-nodes; then
    for f in $(mesh_files virtual-nodes); do
        delete_appmesh virtual-node "$f" --mesh-name "$MESH_NAME" --virtual-node-name "$(field "$f" virtualNodeName)"
    done
fi
if ! skipped mesh && exists appmesh describe-mesh --mesh-name "$MESH_NAME"; then
    awscli appmesh delete-mesh --mesh-name "$MESH_NAME" >/dev/null
    say "deleted mesh $MESH_NAME"
fi
}

if [ -n "$SELF_HOSTED" ]; then
    if [ -n "${APPMESH_API_KEY_ID:-}" ]; then mesh; fi
    services
    task_definitions
    skipped control-plane || "$ROOT/deploy/control-plane.sh" down "${ENDPOINT_ARGS[@]+"${ENDPOINT_ARGS[@]}"}"
    cluster
    cloud_map
else
    services
    cluster
    cloud_map
    task_definitions
    mesh
fi
say "teardown done"
