#!/usr/bin/env bash
# Replays "AWS App Mesh - Step by Step" against an AWS account (or any endpoint that
# speaks the same APIs): the mesh, virtual nodes, routers, routes, virtual services, the
# ingress gateway and its gateway routes from mesh/, the task definitions from taskdefs/
# (rendered), a Cloud Map namespace with a service per virtual node and gateway, and an
# ECS cluster with a Fargate service per task.
#
# With --self-hosted (App Mesh itself is gone since 2026-09-30), the App Mesh calls go to
# the control plane deploy/control-plane.sh runs, and each task definition's Envoy gets
# APPMESH_XDS_ENDPOINT pointing at it; nothing else changes. With --sidecar-image IMAGE
# (gophermesh images build --sidecar, pushed to a registry), each Envoy container runs that
# image instead of aws-appmesh-envoy, with the same environment.
#
# Safe to run again: what exists is updated (App Mesh, task definitions, ECS services) or
# left alone (namespace, Cloud Map services, cluster).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STEPS=(mesh virtual-nodes virtual-routers routes virtual-services virtual-gateways gateway-routes task-definitions cloud-map cluster services)

usage() {
    cat <<USAGE
usage: deploy/walkthrough.sh [--self-hosted] [--sidecar-image IMAGE] [--endpoint-url URL] [--skip STEP]...

  --self-hosted   use the control plane of deploy/control-plane.sh: App Mesh calls to
                  https://CONTROL_PLANE_HOST (or AWS_ENDPOINT_URL_APP_MESH) signed with the
                  API credentials in Secrets Manager, and APPMESH_XDS_ENDPOINT=
                  CONTROL_PLANE_HOST:15010 in each Envoy container
  --sidecar-image IMAGE
                  each Envoy container runs IMAGE (gophermesh-envoy, pushed to your
                  registry) in place of aws-appmesh-envoy; nothing else in it changes

Steps, in order: ${STEPS[*]}

Environment:
  AWS_ACCOUNT_ID, AWS_REGION, IMAGE_REPOSITORY  fill the task definition placeholders
  VPC_ID                       the VPC of the Cloud Map namespace (step cloud-map)
  VIRTUAL_SERVICE_IP           the address virtual service names resolve to (default 10.10.10.10)
  SUBNETS, SECURITY_GROUPS     comma-separated, for the Fargate services (step services)
  AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_APP_MESH, ...   per-service endpoints, as the AWS CLI reads them
  CONTROL_PLANE_HOST           with --self-hosted: the control plane's name (default xds.gophers.local)
  GOPHERMESH                   the gophermesh binary (default: on PATH, else target/{release,debug})
USAGE
}

parse_common_args "$@"
SIDECAR_IMAGE=
set -- "${ARGS[@]+"${ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case $1 in
        --sidecar-image) [ $# -ge 2 ] && [ -n "$2" ] || die "--sidecar-image needs an image (REGISTRY/gophermesh-envoy:TAG)"; SIDECAR_IMAGE=$2; shift 2 ;;
        --sidecar-image=*) SIDECAR_IMAGE=${1#*=}; [ -n "$SIDECAR_IMAGE" ] || die "--sidecar-image needs an image"; shift ;;
        *) die "unexpected argument: $1 (see --help)" ;;
    esac
done
for s in "${SKIP[@]+"${SKIP[@]}"}"; do
    [[ " ${STEPS[*]} " == *" $s "* ]] || die "--skip $s: no such step; steps are: ${STEPS[*]}"
done
require_tools
use_self_hosted

step() { say "step $1: $2"; }

# Create or update one App Mesh resource. $1 = kind (virtual-node, ...), $2 = file,
# $3.. = the describe call's identifying arguments.
apply_appmesh() {
    local kind=$1 file=$2; shift 2
    if exists appmesh "describe-$kind" "$@"; then
        awscli appmesh "update-$kind" --cli-input-json "$(without "$file" tags)" --query "$(query "$kind")" --output text >/dev/null
        say "  updated $kind $(basename "$file" .json)"
    else
        awscli appmesh "create-$kind" --cli-input-json "file://$file" >/dev/null
        say "  created $kind $(basename "$file" .json)"
    fi
}
query() { case $1 in mesh) echo mesh.metadata.version ;; virtual-node) echo virtualNode.metadata.version ;; virtual-router) echo virtualRouter.metadata.version ;; route) echo route.metadata.version ;; virtual-service) echo virtualService.metadata.version ;; virtual-gateway) echo virtualGateway.metadata.version ;; gateway-route) echo gatewayRoute.metadata.version ;; esac; }

mesh_files() { [ ! -d "$MESH_DIR/$1" ] || find "$MESH_DIR/$1" -name '*.json' | sort; }

if ! skipped mesh; then
    step mesh "create-mesh $MESH_NAME"
    f=$MESH_DIR/mesh.json
    if exists appmesh describe-mesh --mesh-name "$(field "$f" meshName)"; then
        awscli appmesh update-mesh --cli-input-json "$(without "$f" tags)" >/dev/null
        say "  updated mesh $(field "$f" meshName)"
    else
        awscli appmesh create-mesh --cli-input-json "file://$f" >/dev/null
        say "  created mesh $(field "$f" meshName)"
    fi
fi
if ! skipped virtual-nodes; then
    step virtual-nodes "create-virtual-node, one per file in mesh/virtual-nodes"
    for f in $(mesh_files virtual-nodes); do
        apply_appmesh virtual-node "$f" --mesh-name "$(field "$f" meshName)" --virtual-node-name "$(field "$f" virtualNodeName)"
    done
fi
if ! skipped virtual-routers; then
    step virtual-routers "create-virtual-router, one per file in mesh/virtual-routers"
    for f in $(mesh_files virtual-routers); do
        apply_appmesh virtual-router "$f" --mesh-name "$(field "$f" meshName)" --virtual-router-name "$(field "$f" virtualRouterName)"
    done
fi
if ! skipped routes; then
    step routes "create-route, one per file in mesh/routes"
    for f in $(mesh_files routes); do
        apply_appmesh route "$f" --mesh-name "$(field "$f" meshName)" --virtual-router-name "$(field "$f" virtualRouterName)" --route-name "$(field "$f" routeName)"
    done
fi
if ! skipped virtual-services; then
    step virtual-services "create-virtual-service, one per file in mesh/virtual-services"
    for f in $(mesh_files virtual-services); do
        apply_appmesh virtual-service "$f" --mesh-name "$(field "$f" meshName)" --virtual-service-name "$(field "$f" virtualServiceName)"
    done
fi
if ! skipped virtual-gateways; then
    step virtual-gateways "create-virtual-gateway, one per file in mesh/virtual-gateways"
    for f in $(mesh_files virtual-gateways); do
        apply_appmesh virtual-gateway "$f" --mesh-name "$(field "$f" meshName)" --virtual-gateway-name "$(field "$f" virtualGatewayName)"
    done
fi
if ! skipped gateway-routes; then
    step gateway-routes "create-gateway-route, one per file in mesh/gateway-routes"
    for f in $(mesh_files gateway-routes); do
        apply_appmesh gateway-route "$f" --mesh-name "$(field "$f" meshName)" --virtual-gateway-name "$(field "$f" virtualGatewayName)" --gateway-route-name "$(field "$f" gatewayRouteName)"
    done
fi

RENDERED=$(mktemp -d)
trap 'rm -rf "$RENDERED"' EXIT
if ! skipped task-definitions || ! skipped services; then
    xds=()
    [ -z "$SELF_HOSTED" ] || xds=(--xds-endpoint "$CONTROL_PLANE_HOST:$XDS_PORT")
    [ -z "$SIDECAR_IMAGE" ] || xds+=(--sidecar-image "$SIDECAR_IMAGE")
    "$(gophermesh_bin)" render taskdefs --taskdefs-dir "$TASKDEFS_DIR" --out "$RENDERED" "${xds[@]+"${xds[@]}"}" >/dev/null
fi
if ! skipped task-definitions; then
    step task-definitions "register-task-definition, one per file in taskdefs/ (rendered)"
    for f in "$RENDERED"/*.json; do
        arn=$(awscli ecs register-task-definition --cli-input-json "file://$f" --query taskDefinition.taskDefinitionArn --output text)
        say "  registered $arn"
    done
fi

# Cloud Map service names: one per virtual node (its DNS hostname's first label), one per
# virtual service, so that the virtual service's name resolves in the VPC, and one per
# virtual gateway (`ingress.NAMESPACE`, where its task is found).
cloudmap_names() {
    for f in $(mesh_files virtual-nodes); do field "$f" spec.serviceDiscovery.dns.hostname; done | sed "s/\.$NAMESPACE\$//"
    for f in $(mesh_files virtual-services); do field "$f" virtualServiceName; done | sed "s/\.$NAMESPACE\$//"
    for f in $(mesh_files virtual-gateways); do field "$f" virtualGatewayName; done
}

if ! skipped cloud-map; then
    step cloud-map "Cloud Map namespace $NAMESPACE and its services"
    ensure_namespace
    ns=$(namespace_id)
    for name in $(cloudmap_names | sort -u); do
        arn=$(cloudmap_service_arn "$name")
        if [ "$arn" = "None" ] || [ -z "$arn" ]; then
            awscli servicediscovery create-service --name "$name" --namespace-id "$ns" \
                --dns-config "NamespaceId=$ns,RoutingPolicy=MULTIVALUE,DnsRecords=[{Type=A,TTL=300}]" \
                --health-check-custom-config FailureThreshold=1 >/dev/null
            say "  created Cloud Map service $name.$NAMESPACE"
        else
            say "  Cloud Map service $name.$NAMESPACE exists"
        fi
    done
    # A virtual service's name only has to resolve: Envoy intercepts the connection and
    # routes by the Host header. Give each one an address that no task uses.
    node_hosts=" $(for f in $(mesh_files virtual-nodes); do field "$f" spec.serviceDiscovery.dns.hostname; done | tr '\n' ' ') "
    for f in $(mesh_files virtual-services); do
        name=$(field "$f" virtualServiceName)
        # A name that is also a node's hostname resolves to that node's tasks already.
        [[ "$node_hosts" == *" $name "* ]] && continue
        name=${name%."$NAMESPACE"}
        id=$(cloudmap_service_arn "$name"); id=${id##*/}
        awscli servicediscovery register-instance --service-id "$id" --instance-id virtual-service \
            --attributes "AWS_INSTANCE_IPV4=${VIRTUAL_SERVICE_IP:-10.10.10.10}" >/dev/null
        say "  $name.$NAMESPACE resolves to ${VIRTUAL_SERVICE_IP:-10.10.10.10} (any address works; Envoy intercepts it)"
    done
fi

if ! skipped cluster; then
    step cluster "ECS cluster $CLUSTER"
    ensure_cluster
fi

if ! skipped services; then
    step services "one Fargate service per task definition, registered in Cloud Map"
    : "${SUBNETS:?set SUBNETS (comma-separated subnet ids) for the Fargate services (or --skip services)}"
    : "${SECURITY_GROUPS:?set SECURITY_GROUPS (comma-separated) for the Fargate services (or --skip services)}"
    for f in "$RENDERED"/*.json; do
        family=$(field "$f" family)
        # "virtualNode NAME" or "virtualGateway NAME": what the Envoy container serves (a
        # gateway's task has no proxy configuration; its only container is Envoy).
        read -r kind node < <(python3 - "$f" <<'PY'
import json, sys
td = json.load(open(sys.argv[1]))
envoy = td.get("proxyConfiguration", {}).get("containerName")
for c in td["containerDefinitions"]:
    if envoy is None or c["name"] == envoy:
        for kv in c.get("environment", []):
            if kv["name"] in ("APPMESH_RESOURCE_ARN", "APPMESH_VIRTUAL_NODE_NAME"):
                kind, name = kv["value"].split("/")[-2:]
                print(kind, name)
PY
)
        if [ "$kind" = virtualGateway ]; then
            hostname=$node.$NAMESPACE
        else
            hostname=$(field "$MESH_DIR/virtual-nodes/$node.json" spec.serviceDiscovery.dns.hostname)
        fi
        registry=$(cloudmap_service_arn "${hostname%."$NAMESPACE"}")
        status=$(awscli ecs describe-services --cluster "$CLUSTER" --services "$family" --query 'services[0].status' --output text 2>/dev/null || true)
        if [ "$status" = ACTIVE ]; then
            awscli ecs update-service --cluster "$CLUSTER" --service "$family" --task-definition "$family" >/dev/null
            say "  updated service $family to the latest $family revision"
        else
            awscli ecs create-service --cluster "$CLUSTER" --service-name "$family" --task-definition "$family" \
                --desired-count 1 --launch-type FARGATE \
                --network-configuration "awsvpcConfiguration={subnets=[$SUBNETS],securityGroups=[$SECURITY_GROUPS],assignPublicIp=DISABLED}" \
                --service-registries "registryArn=$registry" >/dev/null
            say "  created service $family (Cloud Map ${hostname})"
        fi
    done
fi
say "done. From an instance in the VPC: curl http://requester.$NAMESPACE:8080/ and curl 'http://requester.$NAMESPACE:8080/compare?n=200'; through the ingress gateway: curl http://ingress.$NAMESPACE:9080/distributor/"
