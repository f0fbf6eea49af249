//! Deleting what an earlier apply of the mesh made and it no longer has, in the order
//! Lattice accepts, waiting for associations to go.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Reconciler, Stopped, str_of};

impl<'a> Reconciler<'a> {
    /// Deletes this mesh's Lattice resources whose ids are not in `kept`, in the order
    /// Lattice allows: listeners, associations (waiting until they are gone), services
    /// (which takes their rules), target groups, service networks.
    pub(super) fn delete_all_but(&mut self, kept: &BTreeSet<String>) -> Result<(), Stopped> {
        let what = "this mesh's Lattice resources";
        let services = self.owned(what, "list-services", &json!({}))?;
        let networks = self.owned(what, "list-service-networks", &json!({}))?;
        let stale = |item: &Value| !kept.contains(item["id"].as_str().unwrap_or_default());
        for service in services.iter().filter(|s| !stale(s)) {
            let service_id = str_of(&service["id"]);
            let listeners = self.items(
                what,
                "list-listeners",
                &json!({ "serviceIdentifier": service_id }),
            )?;
            for listener in listeners.iter().filter(|l| stale(l)) {
                let id = str_of(&listener["id"]);
                let what = format!(
                    "listener {} of service {}",
                    str_of(&listener["name"]),
                    str_of(&service["name"])
                );
                let key = json!({ "serviceIdentifier": service_id, "listenerIdentifier": id });
                self.delete(&what, "delete-listener", &key, &id, "not in the mesh now")?;
            }
        }
        let mut associations = Vec::new();
        for network in &networks {
            associations.extend(self.items(
                what,
                "list-service-network-service-associations",
                &json!({ "serviceNetworkIdentifier": network["id"] }),
            )?);
        }
        for service in services.iter().filter(|s| stale(s)) {
            associations.extend(self.items(
                what,
                "list-service-network-service-associations",
                &json!({ "serviceIdentifier": service["id"] }),
            )?);
        }
        let names: BTreeMap<String, String> = services
            .iter()
            .chain(&networks)
            .map(|i| (str_of(&i["id"]), str_of(&i["name"])))
            .collect();
        let name = |id: &Value| {
            let id = str_of(id);
            names.get(&id).cloned().unwrap_or(id)
        };
        let mut gone = BTreeSet::new();
        for association in associations.iter().filter(|a| stale(a)) {
            let id = str_of(&association["id"]);
            if !gone.insert(id.clone()) {
                continue;
            }
            let what = format!(
                "association of service {} with network {}",
                name(&association["serviceId"]),
                name(&association["serviceNetworkId"]),
            );
            let key = json!({ "serviceNetworkServiceAssociationIdentifier": id });
            self.delete(
                &what,
                "delete-service-network-service-association",
                &key,
                &id,
                "",
            )?;
        }
        for id in &gone {
            self.wait_gone(id)?;
        }
        for service in services.iter().filter(|s| stale(s)) {
            self.delete(
                &format!("service {}", str_of(&service["name"])),
                "delete-service",
                &json!({ "serviceIdentifier": service["id"] }),
                &str_of(&service["id"]),
                "",
            )?;
        }
        for group in self.owned(what, "list-target-groups", &json!({}))? {
            if stale(&group) {
                self.delete(
                    &format!("target group {}", str_of(&group["name"])),
                    "delete-target-group",
                    &json!({ "targetGroupIdentifier": group["id"] }),
                    &str_of(&group["id"]),
                    "",
                )?;
            }
        }
        for network in networks.iter().filter(|n| stale(n)) {
            self.delete(
                &format!("service network {}", str_of(&network["name"])),
                "delete-service-network",
                &json!({ "serviceNetworkIdentifier": network["id"] }),
                &str_of(&network["id"]),
                "",
            )?;
        }
        Ok(())
    }

    /// Deletes `what` (its `id`) with `call`, saying `why` when there is a reason to give.
    pub(super) fn delete(
        &mut self,
        what: &str,
        call: &str,
        input: &Value,
        id: &str,
        why: &str,
    ) -> Result<(), Stopped> {
        self.call(what, call, input)?;
        self.tally.deleted += 1;
        self.note("deleted  ", what, id, why);
        Ok(())
    }

    pub(super) fn unchanged(&mut self, what: &str, id: &str) {
        self.tally.unchanged += 1;
        self.note("unchanged", what, id, "");
    }

    /// Waits until Lattice no longer has the association `id` (AWS deletes them a little
    /// after it answers).
    fn wait_gone(&self, id: &str) -> Result<(), Stopped> {
        let start = Instant::now();
        let mut said = false;
        loop {
            let key = json!({ "serviceNetworkServiceAssociationIdentifier": id });
            match self
                .aws
                .call("get-service-network-service-association", &key)
            {
                Err(r) if r.not_found() => return Ok(()),
                Err(r) => return Err(self.refused(&format!("association {id}"), r)),
                Ok(answer) if answer["status"] == "DELETE_FAILED" => {
                    return Err(self.stop(format!(
                        "association {id}: Lattice could not delete it (DELETE_FAILED)"
                    )));
                }
                Ok(_) if start.elapsed() > ASSOCIATION_GONE_WITHIN => {
                    return Err(self.stop(format!(
                        "association {id}: still there {} s after it was deleted",
                        ASSOCIATION_GONE_WITHIN.as_secs()
                    )));
                }
                Ok(_) => {
                    if !said {
                        println!("waiting for Lattice to delete association {id}...");
                        said = true;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
    }
}

/// How long `--teardown` waits for Lattice to finish deleting an association before it
/// deletes the service or the network (AWS deletes associations asynchronously).
const ASSOCIATION_GONE_WITHIN: Duration = Duration::from_secs(180);
