"""VPC Lattice operations that moto (5.2.5) does not serve, over moto's own Lattice model.

moto answers the create, get and list calls of VPC Lattice but not ListRules, GetRule,
UpdateRule, the other Update* calls nor any Delete*, so `gophermesh export lattice --apply`
(which reads rules back to change only what differs) and `--teardown` could not be tested
against it. `install()` adds those operations to moto's VPCLatticeResponse, working on
moto's VPCLatticeBackend state, with the request and answer shapes of botocore's vpc-lattice
model (the AWS CLI, which checks both, is the client in the tests) and the refusals AWS
documents:

- a service still associated with a service network cannot be deleted (ConflictException);
  deleting it deletes its listeners and their rules;
- a service network with service associations cannot be deleted (ConflictException);
- a target group that a listener or a rule forwards to cannot be deleted (ConflictException);
- deleting a listener deletes its rules;
- ListRules lists the listener's default rule too (isDefault true), as AWS does.

A deleted association is gone at once (AWS answers DELETE_IN_PROGRESS and removes it a
little later; the status in the answer says so, as AWS's does).
"""

import json
from datetime import datetime, timezone
from urllib.parse import unquote

from moto.core.exceptions import JsonRESTError
from moto.vpclattice.exceptions import ResourceNotFoundException
from moto.vpclattice.responses import VPCLatticeResponse


class ConflictException(JsonRESTError):
    code = 409

    def __init__(self, message: str):
        super().__init__("ConflictException", message)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _forwards_to(action, target_group_id: str) -> bool:
    groups = (action or {}).get("forward", {}).get("targetGroups", [])
    return any(g.get("targetGroupIdentifier") == target_group_id for g in groups)


# The backend: the state changes, with AWS's refusals.


def _rules_of(self, listener_id: str):
    return [r for r in self.rules.values() if r.listener_identifier == listener_id]


def _rule(self, service_identifier, listener_identifier, rule_identifier):
    listener = self.get_listener(service_identifier, listener_identifier)
    rule = self.rules.get(rule_identifier)
    if rule is None or rule.listener_identifier != listener.id:
        raise ResourceNotFoundException(f"Rule {rule_identifier} not found")
    return rule


def _update_rule(self, service_identifier, listener_identifier, rule_identifier, match, priority, action):
    rule = _rule(self, service_identifier, listener_identifier, rule_identifier)
    if priority is not None and any(
        r.priority == priority and r.id != rule.id for r in _rules_of(self, rule.listener_identifier)
    ):
        raise ConflictException(f"Priority {priority} is already used by another rule")
    if match is not None:
        rule.match = match
    if priority is not None:
        rule.priority = priority
    if action is not None:
        rule.action = action
    return rule


def _delete_rule(self, service_identifier, listener_identifier, rule_identifier):
    rule = _rule(self, service_identifier, listener_identifier, rule_identifier)
    del self.rules[rule.id]


def _update_listener(self, service_identifier, listener_identifier, default_action):
    listener = self.get_listener(service_identifier, listener_identifier)
    listener.default_action = default_action
    listener.last_updated_at = _now()
    return listener


def _delete_listener(self, service_identifier, listener_identifier):
    listener = self.get_listener(service_identifier, listener_identifier)
    for rule in _rules_of(self, listener.id):
        del self.rules[rule.id]
    del self.listeners[listener.id]


def _update_target_group(self, target_group_identifier, health_check):
    group = self.get_target_group(target_group_identifier)
    group.config["healthCheck"] = health_check
    group.last_updated_at = _now()
    return group


def _delete_target_group(self, target_group_identifier):
    group = self.get_target_group(target_group_identifier)
    users = [l.id for l in self.listeners.values() if _forwards_to(l.default_action, group.id)]
    users += [r.id for r in self.rules.values() if _forwards_to(r.action, group.id)]
    if users:
        raise ConflictException(f"Target group {group.id} is used by {', '.join(users)}")
    del self.target_groups[group.id]
    return group


def _update_service(self, service_identifier, auth_type, certificate_arn):
    service = self.get_service(service_identifier)
    if auth_type is not None:
        service.auth_type = auth_type
    if certificate_arn is not None:
        service.certificate_arn = certificate_arn
    return service


def _delete_service(self, service_identifier):
    service = self.get_service(service_identifier)
    associated = [
        a.id for a in self.service_network_service_associations.values() if a.service_id == service.id
    ]
    if associated:
        raise ConflictException(
            f"Service {service.id} is associated with a service network ({', '.join(associated)})"
        )
    for listener in [l for l in self.listeners.values() if l.service_identifier == service.id]:
        _delete_listener(self, service.id, listener.id)
    del self.services[service.id]
    return service


def _update_service_network(self, service_network_identifier, auth_type):
    network = self.get_service_network(service_network_identifier)
    network.auth_type = auth_type
    return network


def _delete_service_network(self, service_network_identifier):
    network = self.get_service_network(service_network_identifier)
    associations = [
        a.id
        for a in list(self.service_network_service_associations.values())
        + list(self.service_network_vpc_associations.values())
        if getattr(a, "service_network_id", None) == network.id
    ]
    if associations:
        raise ConflictException(f"Service network {network.id} has associations ({', '.join(associations)})")
    del self.service_networks[network.id]


def _delete_service_network_service_association(self, identifier):
    association = self.get_service_network_service_association(identifier)
    del self.service_network_service_associations[association.id]
    association.status = "DELETE_IN_PROGRESS"
    return association


# The responses: parameters in, botocore's output shapes out.


def _listener_and_rule_ids(self):
    parts = unquote(self.path).split("/")
    return parts[2], parts[4], parts[6] if len(parts) > 6 else None


def r_list_rules(self) -> str:
    service, listener, _ = _listener_and_rule_ids(self)
    found = self.backend.get_listener(service, listener)
    items = [
        {
            "arn": f"{found.arn}/rule/default",
            "id": f"rule-default{found.id[-6:]}",
            "name": "default",
            "isDefault": True,
            "createdAt": found.createdAt,
            "lastUpdatedAt": found.last_updated_at,
        }
    ]
    for rule in sorted(_rules_of(self.backend, found.id), key=lambda r: r.priority):
        items.append(
            {
                "arn": rule.arn,
                "id": rule.id,
                "name": rule.name,
                "priority": rule.priority,
                "isDefault": False,
            }
        )
    return json.dumps({"items": items})


def _rule_answer(rule) -> str:
    return json.dumps(
        {
            "arn": rule.arn,
            "id": rule.id,
            "name": rule.name,
            "isDefault": False,
            "match": rule.match,
            "priority": rule.priority,
            "action": rule.action,
        }
    )


def r_get_rule(self) -> str:
    service, listener, rule = _listener_and_rule_ids(self)
    return _rule_answer(_rule(self.backend, service, listener, rule))


def r_update_rule(self) -> str:
    service, listener, rule = _listener_and_rule_ids(self)
    body = json.loads(self.body or "{}")
    return _rule_answer(
        _update_rule(self.backend, service, listener, rule, body.get("match"), body.get("priority"), body.get("action"))
    )


def r_delete_rule(self) -> str:
    service, listener, rule = _listener_and_rule_ids(self)
    _delete_rule(self.backend, service, listener, rule)
    return "{}"


def r_update_listener(self) -> str:
    service, listener, _ = _listener_and_rule_ids(self)
    body = json.loads(self.body or "{}")
    return json.dumps(_update_listener(self.backend, service, listener, body.get("defaultAction")).to_dict())


def r_delete_listener(self) -> str:
    service, listener, _ = _listener_and_rule_ids(self)
    _delete_listener(self.backend, service, listener)
    return "{}"


def _last(self) -> str:
    return unquote(self.path).rstrip("/").split("/")[-1]


def r_update_target_group(self) -> str:
    body = json.loads(self.body or "{}")
    group = _update_target_group(self.backend, _last(self), body.get("healthCheck"))
    answer = {k: v for k, v in group.to_dict().items() if k in ("id", "arn", "name", "type", "config", "status")}
    return json.dumps(answer)


def r_delete_target_group(self) -> str:
    group = _delete_target_group(self.backend, _last(self))
    return json.dumps({"id": group.id, "arn": group.arn, "status": "DELETE_IN_PROGRESS"})


def r_update_service(self) -> str:
    body = json.loads(self.body or "{}")
    service = _update_service(self.backend, _last(self), body.get("authType"), body.get("certificateArn"))
    return json.dumps(
        {
            "id": service.id,
            "arn": service.arn,
            "name": service.name,
            "customDomainName": service.custom_domain_name,
            "authType": service.auth_type,
        }
    )


def r_delete_service(self) -> str:
    service = _delete_service(self.backend, _last(self))
    return json.dumps({"id": service.id, "arn": service.arn, "name": service.name, "status": "DELETE_IN_PROGRESS"})


def r_update_service_network(self) -> str:
    body = json.loads(self.body or "{}")
    network = _update_service_network(self.backend, _last(self), body.get("authType"))
    return json.dumps({"id": network.id, "name": network.name, "arn": network.arn, "authType": network.auth_type})


def r_delete_service_network(self) -> str:
    _delete_service_network(self.backend, _last(self))
    return "{}"


def r_delete_service_network_service_association(self) -> str:
    association = _delete_service_network_service_association(self.backend, _last(self))
    return json.dumps({"id": association.id, "status": association.status, "arn": association.arn})


def install() -> None:
    """Adds the operations moto lacks to its VPCLatticeResponse (before the server starts);
    an operation a later moto serves itself is left to it."""
    for name, method in list(globals().items()):
        if name.startswith("r_") and not hasattr(VPCLatticeResponse, name[2:]):
            setattr(VPCLatticeResponse, name[2:], method)
