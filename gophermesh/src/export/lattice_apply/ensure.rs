//! Applying: each step's resource made or brought to what the mesh says (networks, target
//! groups and services found by name, associations, listeners, rules), and the rules a
//! listener no longer has deleted.

use super::{Reconciler, Stopped, Top, differs, label, resolve, str_of};
use crate::export::lattice::LatticeStep;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

impl<'a> Reconciler<'a> {
    /// Brings the account to `steps`, then deletes what this mesh made that they lack.
    pub(super) fn apply(&mut self, steps: &[LatticeStep], vpc: &str) -> Result<(), Stopped> {
        for step in steps {
            let what = label(step);
            let input = resolve(&step.input, &self.ids, vpc).map_err(|e| self.stop(e))?;
            let id = match step.call {
                "create-service-network" => self.ensure_named(&what, step, &input, Top::Network)?,
                "create-target-group" => self.ensure_named(&what, step, &input, Top::Group)?,
                "create-service" => self.ensure_named(&what, step, &input, Top::Service)?,
                "create-service-network-service-association" => {
                    self.ensure_association(&what, step, &input)?
                }
                "create-listener" => self.ensure_listener(&what, steps, step, &input)?,
                "create-rule" => self.ensure_rule(&what, step, &input)?,
                other => return Err(self.stop(format!("{what}: no such Lattice step: {other}"))),
            };
            self.ids.insert(step.reference.clone(), id);
        }
        let kept: BTreeSet<String> = self.ids.values().cloned().collect();
        self.delete_all_but(&kept)
    }

    /// A service network, target group or service: found by name among the account's
    /// (listed once per run), compared and updated, or created.
    fn ensure_named(
        &mut self,
        what: &str,
        step: &LatticeStep,
        input: &Value,
        top: Top,
    ) -> Result<String, Stopped> {
        let (list, get, key) = top.calls();
        if !self.lists.contains_key(list) {
            let items = self.items(what, list, &json!({}))?;
            self.lists.insert(list, items);
        }
        let items = self.lists[list].clone();
        let Some(found) = self.named(what, &items, input)? else {
            return self.create(what, step, input);
        };
        let id = str_of(&found["id"]);
        let now = self.call(what, get, &json!({ key: id }))?;
        let (differs, update) = match top {
            Top::Network | Top::Service => {
                if top == Top::Service {
                    let field = "customDomainName";
                    self.immutable(what, differs(&input[field], &now[field], field))?;
                }
                (
                    differs(&input["authType"], &now["authType"], "authType"),
                    json!({ key: id, "authType": input["authType"] }),
                )
            }
            Top::Group => {
                let mut fixed = input["config"].clone();
                let health = fixed
                    .as_object_mut()
                    .and_then(|c| c.remove("healthCheck"))
                    .unwrap_or(Value::Null);
                self.immutable(what, differs(&input["type"], &now["type"], "type"))?;
                self.immutable(what, differs(&fixed, &now["config"], "config"))?;
                (
                    differs(&health, &now["config"]["healthCheck"], "config.healthCheck"),
                    json!({ key: id, "healthCheck": health }),
                )
            }
        };
        self.update_if(what, &id, differs, top.update(), update)?;
        Ok(id)
    }

    /// The service's association with the network: there, or created.
    fn ensure_association(
        &mut self,
        what: &str,
        step: &LatticeStep,
        input: &Value,
    ) -> Result<String, Stopped> {
        let existing = self.items(
            what,
            "list-service-network-service-associations",
            &json!({ "serviceNetworkIdentifier": input["serviceNetworkIdentifier"] }),
        )?;
        match existing
            .iter()
            .find(|a| a["serviceId"] == input["serviceIdentifier"])
        {
            Some(found) => {
                let id = str_of(&found["id"]);
                self.unchanged(what, &id);
                Ok(id)
            }
            None => self.create(what, step, input),
        }
    }

    /// A service's listener: found by name, its default action compared and updated and its
    /// rules pruned (see [`Reconciler::prune_rules`]), or created.
    fn ensure_listener(
        &mut self,
        what: &str,
        steps: &[LatticeStep],
        step: &LatticeStep,
        input: &Value,
    ) -> Result<String, Stopped> {
        let service = input["serviceIdentifier"].clone();
        let existing = self.items(
            what,
            "list-listeners",
            &json!({ "serviceIdentifier": service }),
        )?;
        let Some(found) = existing.iter().find(|l| l["name"] == input["name"]) else {
            return self.create(what, step, input);
        };
        let id = str_of(&found["id"]);
        let key = json!({ "serviceIdentifier": service, "listenerIdentifier": id });
        let now = self.call(what, "get-listener", &key)?;
        for field in ["protocol", "port"] {
            self.immutable(what, differs(&input[field], &now[field], field))?;
        }
        let differs = differs(
            &input["defaultAction"],
            &now["defaultAction"],
            "defaultAction",
        );
        let mut update = key.clone();
        update["defaultAction"] = input["defaultAction"].clone();
        self.update_if(what, &id, differs, "update-listener", update)?;
        let rules = self.prune_rules(what, steps, step, &key)?;
        self.rules.insert(id.clone(), rules);
        Ok(id)
    }

    /// A listener's rule: found by name among those its listener kept, its match and action
    /// compared and updated, or created.
    fn ensure_rule(
        &mut self,
        what: &str,
        step: &LatticeStep,
        input: &Value,
    ) -> Result<String, Stopped> {
        let listener = str_of(&input["listenerIdentifier"]);
        let found = self
            .rules
            .get(&listener)
            .and_then(|rules| rules.iter().find(|r| r["name"] == input["name"]))
            .cloned();
        let Some(found) = found else {
            return self.create(what, step, input);
        };
        let id = str_of(&found["id"]);
        let key = json!({
            "serviceIdentifier": input["serviceIdentifier"],
            "listenerIdentifier": listener,
            "ruleIdentifier": id,
        });
        let now = self.call(what, "get-rule", &key)?;
        let differs = ["match", "action"]
            .iter()
            .find_map(|f| differs(&input[*f], &now[*f], f));
        let mut update = key.clone();
        for field in ["match", "priority", "action"] {
            update[field] = input[field].clone();
        }
        self.update_if(what, &id, differs, "update-rule", update)?;
        Ok(id)
    }

    /// Deletes the rules of an existing listener that `steps` do not make, and those whose
    /// priority changes (Lattice refuses two rules of one priority, so a reordered rule is
    /// made again); the rest are returned to be compared.
    fn prune_rules(
        &mut self,
        what: &str,
        steps: &[LatticeStep],
        listener_step: &LatticeStep,
        key: &Value,
    ) -> Result<Vec<Value>, Stopped> {
        let here = format!("@{{{}}}", listener_step.reference);
        let wanted: BTreeMap<String, &Value> = steps
            .iter()
            .filter(|s| s.call == "create-rule" && s.input["listenerIdentifier"] == here.as_str())
            .map(|s| (str_of(&s.input["name"]), &s.input["priority"]))
            .collect();
        let mut kept = Vec::new();
        for rule in self.items(what, "list-rules", key)? {
            if rule["isDefault"] == true {
                continue;
            }
            let why = match wanted.get(&str_of(&rule["name"])) {
                None => "the mesh has no such route now",
                Some(priority) if **priority != rule["priority"] => "its priority changed",
                Some(_) => {
                    kept.push(rule);
                    continue;
                }
            };
            let id = str_of(&rule["id"]);
            let mut input = key.clone();
            input["ruleIdentifier"] = json!(id);
            let rule_what = format!(
                "rule {} of {}",
                str_of(&rule["name"]),
                what.split_once(" of ").map_or(what, |(_, service)| service)
            );
            self.delete(&rule_what, "delete-rule", &input, &id, why)?;
        }
        Ok(kept)
    }
}
