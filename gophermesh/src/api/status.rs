//! The control API's status (`GET /v1/status`) as one type, which the API serializes and
//! `gophermesh status`, the console's tests and the end-to-end tests read: the mesh
//! version, the store's health, every mesh's route weights, the Envoys' sync state, the
//! traffic observed per target node, and the tasks (whoever runs them describes those).

use std::collections::BTreeMap;

use controlplane::state::persist::StorageHealth;
use controlplane::xds::ads::EnvoyStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /v1/status`. Whatever is per virtual node is keyed `MESH/NODE` (a virtual
/// gateway's `MESH/virtualGateway/NAME`), whichever mesh it is of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The snapshot version: one more with every accepted change.
    pub version: u64,
    pub store: StoreStatus,
    /// Every mesh held, by name, each with its routes.
    pub meshes: Vec<MeshRoutes>,
    /// Requests completed per target virtual node, summed over every Envoy that runs here.
    pub observed: BTreeMap<String, u64>,
    /// Each Envoy's sync state.
    pub envoys: BTreeMap<String, EnvoyStatus>,
    /// The ACM certificates and Private CA trust the meshes name, as served over SDS:
    /// what each certificate says (subject, issuer, expiry), who uses it, and why its last
    /// read failed, if it did.
    #[serde(default)]
    pub certificates: Vec<controlplane::secrets::SecretStatus>,
    /// Where each virtual node's Envoy and app are, as whoever runs the tasks says.
    pub placements: Value,
    /// Every supervised process or container, as whoever runs the tasks says.
    pub processes: Value,
}

/// The store's health: in memory, or a durable store and how its writes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub durable: bool,
    pub writable: bool,
    /// A file path or `dynamodb://TABLE` (durable stores only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The last write failure, while the store has not written since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub failed_writes: u64,
    #[serde(default)]
    pub reopened: u64,
}

impl StoreStatus {
    /// The status of a store whose health is `health` (`None`: in memory).
    pub fn of(health: Option<StorageHealth>) -> Self {
        match health {
            None => Self {
                durable: false,
                writable: true,
                location: None,
                last_error: None,
                failed_writes: 0,
                reopened: 0,
            },
            Some(h) => Self {
                durable: true,
                writable: h.writable,
                location: Some(h.location),
                last_error: h.last_error,
                failed_writes: h.failed_writes,
                reopened: h.reopened,
            },
        }
    }
}

/// One route's weighted targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteWeights {
    pub virtual_router: String,
    pub route: String,
    pub targets: Vec<TargetWeight>,
}

/// One weighted target of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetWeight {
    pub virtual_node: String,
    pub weight: i64,
}

/// A mesh and its routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshRoutes {
    pub name: String,
    pub routes: Vec<RouteWeights>,
}

impl RouteWeights {
    /// Every route of `mesh` with its weighted targets (none for a route without).
    pub fn of_mesh(mesh: &meshmodel::Mesh) -> Vec<Self> {
        mesh.routes
            .values()
            .map(|r| Self {
                virtual_router: r.value.virtual_router_name.clone(),
                route: r.value.route_name.clone(),
                targets: r
                    .value
                    .spec
                    .weighted_targets()
                    .map(|(_, ts)| {
                        ts.iter()
                            .map(|t| TargetWeight {
                                virtual_node: t.virtual_node.clone(),
                                weight: t.weight,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// How far a change (a mesh version) has reached the Envoys, as a status tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reached {
    /// Every connected Envoy that gets configuration has ACKed it (or a later one).
    All,
    /// These Envoys refused it (or a later version): node and the NACK.
    Refused(Vec<(String, controlplane::xds::ads::Nack)>),
    /// These connected Envoys have not ACKed it yet.
    Waiting(Vec<String>),
}

impl Status {
    /// How far mesh version `version` has reached the Envoys: a NACK of it (or of a later
    /// version) by any Envoy, else the connected Envoys that have not ACKed it yet (those
    /// that get nothing from this control plane are not waited for).
    pub fn reached(&self, version: u64) -> Reached {
        Reached::of(&self.envoys, version)
    }

    /// The weights of route `route` (of any router) of mesh `mesh`, in target order;
    /// `None` when there is no such route.
    pub fn route_weights_in(&self, mesh: &str, route: &str) -> Option<Vec<i64>> {
        self.meshes
            .iter()
            .filter(|m| m.name == mesh)
            .flat_map(|m| &m.routes)
            .find(|r| r.route == route)
            .map(|r| r.targets.iter().map(|t| t.weight).collect())
    }

    /// The weights of route `route` of the only mesh held; `None` when there is no such
    /// route, or several meshes.
    pub fn route_weights(&self, route: &str) -> Option<Vec<i64>> {
        match self.meshes.as_slice() {
            [only] => self.route_weights_in(&only.name, route),
            _ => None,
        }
    }
}

impl Reached {
    /// How far mesh version `version` has reached `envoys` (see [`Status::reached`]).
    pub fn of(envoys: &BTreeMap<String, EnvoyStatus>, version: u64) -> Self {
        let refused: Vec<_> = envoys
            .iter()
            .filter_map(|(node, e)| {
                e.last_nack
                    .as_ref()
                    .filter(|n| n.version.parse::<u64>().is_ok_and(|v| v >= version))
                    .map(|n| (node.clone(), n.clone()))
            })
            .collect();
        if !refused.is_empty() {
            return Reached::Refused(refused);
        }
        let waiting: Vec<String> = envoys
            .iter()
            .filter(|(_, e)| {
                e.connected && e.problem.is_none() && e.synced_version.is_none_or(|v| v < version)
            })
            .map(|(node, _)| node.clone())
            .collect();
        match waiting.is_empty() {
            true => Reached::All,
            false => Reached::Waiting(waiting),
        }
    }

    /// As the control API answers it: `"all"`, `{"refused": [{"envoy", "nack"}]}` or
    /// `{"waiting": [ENVOY, ...]}`.
    pub fn to_json(&self) -> Value {
        match self {
            Reached::All => Value::from("all"),
            Reached::Refused(r) => serde_json::json!({"refused": r
                .iter()
                .map(|(envoy, nack)| serde_json::json!({"envoy": envoy, "nack": nack}))
                .collect::<Vec<_>>()}),
            Reached::Waiting(w) => serde_json::json!({ "waiting": w }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shape is the one `gophermesh status`, the console and the tests read, and
    /// it reads back as it was written.
    #[test]
    fn a_status_keeps_its_wire_shape_and_reads_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
        let mesh = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh loads");
        let status = Status {
            version: 7,
            store: StoreStatus::of(None),
            meshes: vec![MeshRoutes {
                name: "gophermesh".into(),
                routes: RouteWeights::of_mesh(&mesh),
            }],
            observed: BTreeMap::new(),
            envoys: BTreeMap::new(),
            certificates: Vec::new(),
            placements: Value::Null,
            processes: Value::Null,
        };
        let wire = serde_json::to_value(&status).expect("serializes");
        let distributor = wire["meshes"][0]["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["route"] == "distributor"))
            .expect("the distributor route");
        assert_eq!(distributor["virtualRouter"], "distributor");
        assert_eq!(distributor["targets"][0]["virtualNode"], "distributor-v1");
        assert_eq!(wire["store"]["durable"], false);
        let back: Status = serde_json::from_value(wire).expect("reads back");
        assert_eq!(back, status);
        assert_eq!(back.route_weights("distributor"), Some(vec![90, 10]));
        assert_eq!(back.route_weights("nope"), None);
    }

    fn envoy(synced: Option<u64>, nack: Option<&str>) -> EnvoyStatus {
        EnvoyStatus {
            connected: true,
            synced_version: synced,
            last_nack: nack.map(|v| controlplane::xds::ads::Nack {
                type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
                version: v.into(),
                message: "bad header".into(),
                at: "now".into(),
            }),
            ..EnvoyStatus::default()
        }
    }

    /// A change has reached the Envoys when every connected one that gets configuration
    /// has ACKed it; a NACK of it, or of a later version, is a refusal; an older NACK is
    /// history.
    #[test]
    fn how_far_a_change_reached() {
        let status = |envoys: Vec<(&str, EnvoyStatus)>| Status {
            version: 9,
            store: StoreStatus::of(None),
            meshes: Vec::new(),
            observed: BTreeMap::new(),
            envoys: envoys.into_iter().map(|(n, e)| (n.to_owned(), e)).collect(),
            certificates: Vec::new(),
            placements: Value::Null,
            processes: Value::Null,
        };
        let gone = EnvoyStatus {
            connected: false,
            ..EnvoyStatus::default()
        };
        let stranger = EnvoyStatus {
            problem: Some("its node id names mesh `other`".into()),
            ..envoy(None, None)
        };
        let all = status(vec![
            ("a", envoy(Some(9), Some("3"))),
            ("b", gone),
            ("c", stranger),
        ]);
        assert_eq!(all.reached(9), Reached::All);
        let waiting = status(vec![
            ("a", envoy(Some(9), None)),
            ("b", envoy(Some(8), None)),
        ]);
        assert_eq!(waiting.reached(9), Reached::Waiting(vec!["b".into()]));
        let refused = status(vec![
            ("a", envoy(Some(9), None)),
            ("b", envoy(Some(8), Some("9"))),
        ]);
        match refused.reached(9) {
            Reached::Refused(r) => assert_eq!(r[0].0, "b"),
            other => panic!("{other:?}"),
        }
    }
}
