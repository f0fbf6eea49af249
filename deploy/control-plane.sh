#!/usr/bin/env bash
# Runs gophermesh's own control plane on ECS, in place of App Mesh (gone since 2026-09-30):
# `gophermesh serve` as a Fargate service of CONTROL_PLANE_COUNT tasks (default 2) sharing
# one DynamoDB table, behind a Network Load Balancer with TLS listeners (ADS on 15010, the
# App Mesh API on 443), named CONTROL_PLANE_HOST (default xds.gophers.local) in Cloud Map.
# Then `deploy/walkthrough.sh --self-hosted` creates the mesh through it and runs the tasks
# with APPMESH_XDS_ENDPOINT pointing at it.
#
#   deploy/control-plane.sh [up]     create or update (safe to run again)
#   deploy/control-plane.sh down     remove all of it, the table and the secret included
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STEPS=(state-table api-credentials task-definition cluster load-balancer service name wait)
TG_XDS=gophermesh-xds
TG_API=gophermesh-api

usage() {
    cat <<USAGE
usage: deploy/control-plane.sh [up|down] [--endpoint-url URL] [--skip STEP]...

Steps of up, in order: ${STEPS[*]}

Environment:
  AWS_ACCOUNT_ID, AWS_REGION, IMAGE_REPOSITORY  fill the task definition placeholders
                               (the image: IMAGE_REPOSITORY/gophermesh/control-plane:latest,
                               from 'gophermesh images build --control-plane')
  CERTIFICATE_ARN              an ACM certificate for CONTROL_PLANE_HOST (step load-balancer)
  VPC_ID, SUBNETS, SECURITY_GROUPS   where the load balancer and the tasks go (comma-separated)
  CONTROL_PLANE_HOST           the name Envoys and the AWS CLI use (default xds.gophers.local)
  CONTROL_PLANE_COUNT          how many replicas (default 2)
  STATE_TABLE                  the DynamoDB table (default gophermesh-state)
  API_SECRET                   the Secrets Manager secret of the API credentials
                               (default gophermesh/api-credentials; made when missing, from
                               GOPHERMESH_API_ACCESS_KEY_ID/GOPHERMESH_API_SECRET_ACCESS_KEY
                               when set, else random)
  CONTROL_PLANE_WAIT           seconds to wait for the API to answer (default 300)
  AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>   per-service endpoints, as the AWS CLI reads them
USAGE
}

parse_common_args "$@"
MODE=${ARGS[0]:-up}
[ ${#ARGS[@]} -le 1 ] || die "unexpected argument: ${ARGS[1]} (see --help)"
case $MODE in up|down) ;; *) die "unknown mode '$MODE': up or down (see --help)" ;; esac
for s in "${SKIP[@]+"${SKIP[@]}"}"; do
    [[ " ${STEPS[*]} " == *" $s "* ]] || die "--skip $s: no such step; steps are: ${STEPS[*]}"
done
require_tools

step() { say "step $1: $2"; }
none() { [ -z "$1" ] || [ "$1" = None ]; }
lb_arn() { awscli elbv2 describe-load-balancers --names "$CONTROL_PLANE_LB" --query 'LoadBalancers[0].LoadBalancerArn' --output text 2>/dev/null || true; }
tg_arn() { awscli elbv2 describe-target-groups --names "$1" --query 'TargetGroups[0].TargetGroupArn' --output text 2>/dev/null || true; }
service_status() { awscli ecs describe-services --cluster "$CLUSTER" --services "$CONTROL_PLANE_SERVICE" --query 'services[0].status' --output text 2>/dev/null || true; }
name_label() { [[ "$CONTROL_PLANE_HOST" == *".$NAMESPACE" ]] && echo "${CONTROL_PLANE_HOST%."$NAMESPACE"}"; }

up() {
    if ! skipped state-table; then
        step state-table "DynamoDB table $STATE_TABLE (key pk, on demand)"
        if exists dynamodb describe-table --table-name "$STATE_TABLE"; then
            say "  table $STATE_TABLE exists"
        else
            awscli dynamodb create-table --table-name "$STATE_TABLE" \
                --attribute-definitions AttributeName=pk,AttributeType=S \
                --key-schema AttributeName=pk,KeyType=HASH --billing-mode PAY_PER_REQUEST >/dev/null
            awscli dynamodb wait table-exists --table-name "$STATE_TABLE"
            say "  created table $STATE_TABLE"
        fi
    fi

    if ! skipped api-credentials; then
        step api-credentials "the App Mesh API's SigV4 credentials in Secrets Manager ($API_SECRET)"
        if exists secretsmanager describe-secret --secret-id "$API_SECRET"; then
            say "  secret $API_SECRET exists"
        else
            local id=${GOPHERMESH_API_ACCESS_KEY_ID:-} secret=${GOPHERMESH_API_SECRET_ACCESS_KEY:-}
            if [ -z "$id" ] || [ -z "$secret" ]; then
                id=GM$(python3 -c 'import secrets; print(secrets.token_hex(9).upper())')
                secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')
            fi
            local doc
            doc=$(python3 -c 'import json, sys; print(json.dumps({"access_key_id": sys.argv[1], "secret_access_key": sys.argv[2]}))' "$id" "$secret")
            awscli secretsmanager create-secret --name "$API_SECRET" --secret-string "$doc" >/dev/null
            say "  created secret $API_SECRET (access key id $id)"
        fi
    fi

    if ! skipped task-definition; then
        step task-definition "register-task-definition gophermesh-control-plane (rendered)"
        local rendered secret_arn
        rendered=$(mktemp -d)
        secret_arn=$(awscli secretsmanager describe-secret --secret-id "$API_SECRET" --query ARN --output text)
        STATE_TABLE=$STATE_TABLE API_SECRET_ARN=$secret_arn CONTROL_PLANE_HOST=$CONTROL_PLANE_HOST \
            "$(gophermesh_bin)" render taskdefs --taskdefs-dir "$ROOT/deploy/control-plane" --out "$rendered" >/dev/null
        local arn
        arn=$(awscli ecs register-task-definition --cli-input-json "file://$rendered/gophermesh-control-plane.json" \
            --query taskDefinition.taskDefinitionArn --output text)
        rm -rf "$rendered"
        say "  registered $arn"
    fi

    if ! skipped cluster; then
        step cluster "ECS cluster $CLUSTER"
        ensure_cluster
    fi

    if ! skipped load-balancer; then
        step load-balancer "Network Load Balancer $CONTROL_PLANE_LB: TLS $XDS_PORT -> ADS, TLS 443 -> App Mesh API"
        : "${CERTIFICATE_ARN:?set CERTIFICATE_ARN to an ACM certificate for $CONTROL_PLANE_HOST (or --skip load-balancer)}"
        : "${SUBNETS:?set SUBNETS (comma-separated subnet ids) for the load balancer}"
        : "${VPC_ID:?set VPC_ID for the target groups}"
        local lb
        lb=$(lb_arn)
        if none "$lb"; then
            # shellcheck disable=SC2046
            lb=$(awscli elbv2 create-load-balancer --name "$CONTROL_PLANE_LB" --type network --scheme internal \
                --subnets $(echo "$SUBNETS" | tr ',' ' ') --query 'LoadBalancers[0].LoadBalancerArn' --output text)
            say "  created load balancer $CONTROL_PLANE_LB"
        else
            say "  load balancer $CONTROL_PLANE_LB exists"
        fi
        local name port tg listeners
        for pair in "$TG_XDS:$XDS_PORT:$XDS_PORT" "$TG_API:9991:443"; do
            IFS=: read -r name port listen <<<"$pair"
            tg=$(tg_arn "$name")
            if none "$tg"; then
                tg=$(awscli elbv2 create-target-group --name "$name" --protocol TCP --port "$port" --vpc-id "$VPC_ID" \
                    --target-type ip --health-check-protocol TCP --query 'TargetGroups[0].TargetGroupArn' --output text)
                say "  created target group $name (tasks' port $port)"
            fi
            listeners=$(awscli elbv2 describe-listeners --load-balancer-arn "$lb" --query "Listeners[?Port==\`$listen\`].ListenerArn" --output text)
            if none "$listeners"; then
                awscli elbv2 create-listener --load-balancer-arn "$lb" --protocol TLS --port "$listen" \
                    --certificates "CertificateArn=$CERTIFICATE_ARN" --ssl-policy ELBSecurityPolicy-TLS13-1-2-2021-06 \
                    --alpn-policy HTTP2Preferred --default-actions "Type=forward,TargetGroupArn=$tg" >/dev/null
                say "  created TLS listener $listen -> $name"
            else
                say "  listener $listen exists"
            fi
        done
    fi

    if ! skipped service; then
        step service "ECS service $CONTROL_PLANE_SERVICE: ${CONTROL_PLANE_COUNT:-2} tasks behind the load balancer"
        : "${SUBNETS:?set SUBNETS (comma-separated subnet ids) for the tasks}"
        : "${SECURITY_GROUPS:?set SECURITY_GROUPS (comma-separated) for the tasks}"
        if [ "$(service_status)" = ACTIVE ]; then
            awscli ecs update-service --cluster "$CLUSTER" --service "$CONTROL_PLANE_SERVICE" \
                --task-definition gophermesh-control-plane --desired-count "${CONTROL_PLANE_COUNT:-2}" >/dev/null
            say "  updated service $CONTROL_PLANE_SERVICE to the latest revision"
        else
            awscli ecs create-service --cluster "$CLUSTER" --service-name "$CONTROL_PLANE_SERVICE" \
                --task-definition gophermesh-control-plane --desired-count "${CONTROL_PLANE_COUNT:-2}" --launch-type FARGATE \
                --network-configuration "awsvpcConfiguration={subnets=[$SUBNETS],securityGroups=[$SECURITY_GROUPS],assignPublicIp=DISABLED}" \
                --load-balancers "targetGroupArn=$(tg_arn "$TG_XDS"),containerName=gophermesh,containerPort=$XDS_PORT" \
                "targetGroupArn=$(tg_arn "$TG_API"),containerName=gophermesh,containerPort=9991" >/dev/null
            say "  created service $CONTROL_PLANE_SERVICE"
        fi
    fi

    if ! skipped name; then
        step name "$CONTROL_PLANE_HOST -> the load balancer"
        local label
        if ! label=$(name_label); then
            say "  $CONTROL_PLANE_HOST is not in $NAMESPACE: make it resolve to $(awscli elbv2 describe-load-balancers --names "$CONTROL_PLANE_LB" --query 'LoadBalancers[0].DNSName' --output text) yourself"
        else
            ensure_namespace
            local ns arn dns
            ns=$(namespace_id)
            arn=$(cloudmap_service_arn "$label")
            if none "$arn"; then
                arn=$(awscli servicediscovery create-service --name "$label" --namespace-id "$ns" \
                    --dns-config "NamespaceId=$ns,RoutingPolicy=WEIGHTED,DnsRecords=[{Type=A,TTL=60}]" \
                    --query Service.Arn --output text)
                say "  created Cloud Map service $label.$NAMESPACE"
            fi
            dns=$(awscli elbv2 describe-load-balancers --names "$CONTROL_PLANE_LB" --query 'LoadBalancers[0].DNSName' --output text)
            awscli servicediscovery register-instance --service-id "${arn##*/}" --instance-id load-balancer \
                --attributes "AWS_ALIAS_DNS_NAME=$dns" >/dev/null
            say "  $CONTROL_PLANE_HOST is an alias of $dns"
        fi
    fi

    if ! skipped wait; then
        SELF_HOSTED=1 use_self_hosted
        step wait "until the App Mesh API at $AWS_ENDPOINT_URL_APP_MESH answers"
        local waited=0 limit=${CONTROL_PLANE_WAIT:-300}
        until awscli appmesh list-meshes >/dev/null 2>&1; do
            [ "$waited" -lt "$limit" ] || die "the App Mesh API at $AWS_ENDPOINT_URL_APP_MESH did not answer within ${limit}s (see the service's events and logs: aws ecs describe-services --cluster $CLUSTER --services $CONTROL_PLANE_SERVICE)"
            [ $((waited % 15)) -ne 0 ] || say "  waiting for the tasks to start and pass the load balancer's health checks (${waited}s)"
            sleep 3
            waited=$((waited + 3))
        done
        say "  it answers"
    fi
    say "done. Envoys: APPMESH_XDS_ENDPOINT=$CONTROL_PLANE_HOST:$XDS_PORT. Next: deploy/walkthrough.sh --self-hosted"
}

down() {
    if [ "$(service_status)" = ACTIVE ]; then
        awscli ecs delete-service --cluster "$CLUSTER" --service "$CONTROL_PLANE_SERVICE" --force >/dev/null
        say "deleted service $CONTROL_PLANE_SERVICE"
    fi
    local lb
    lb=$(lb_arn)
    if ! none "$lb"; then
        for l in $(awscli elbv2 describe-listeners --load-balancer-arn "$lb" --query 'Listeners[].ListenerArn' --output text); do
            awscli elbv2 delete-listener --listener-arn "$l" >/dev/null
        done
        awscli elbv2 delete-load-balancer --load-balancer-arn "$lb" >/dev/null
        say "deleted load balancer $CONTROL_PLANE_LB and its listeners"
    fi
    local tg
    for name in "$TG_XDS" "$TG_API"; do
        tg=$(tg_arn "$name")
        if ! none "$tg"; then
            awscli elbv2 delete-target-group --target-group-arn "$tg" >/dev/null
            say "deleted target group $name"
        fi
    done
    local label ns arn
    if label=$(name_label) && ns=$(namespace_id) && ! none "$ns"; then
        arn=$(cloudmap_service_arn "$label")
        if ! none "$arn"; then
            for instance in $(awscli servicediscovery list-instances --service-id "${arn##*/}" --query 'Instances[].Id' --output text); do
                awscli servicediscovery deregister-instance --service-id "${arn##*/}" --instance-id "$instance" >/dev/null
            done
            awscli servicediscovery delete-service --id "${arn##*/}" >/dev/null
            say "deleted Cloud Map service $label.$NAMESPACE"
        fi
    fi
    for arn in $(awscli ecs list-task-definitions --family-prefix gophermesh-control-plane --status ACTIVE --query 'taskDefinitionArns[]' --output text); do
        awscli ecs deregister-task-definition --task-definition "$arn" >/dev/null
        say "deregistered $arn"
    done
    if exists secretsmanager describe-secret --secret-id "$API_SECRET"; then
        awscli secretsmanager delete-secret --secret-id "$API_SECRET" --force-delete-without-recovery >/dev/null
        say "deleted secret $API_SECRET"
    fi
    if exists dynamodb describe-table --table-name "$STATE_TABLE"; then
        awscli dynamodb delete-table --table-name "$STATE_TABLE" >/dev/null
        say "deleted table $STATE_TABLE (the mesh it held is gone)"
    fi
    say "control plane removed"
}

"$MODE"
