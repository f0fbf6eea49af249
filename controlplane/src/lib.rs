//! The gophermesh control plane: the state of the meshes and how it reaches Envoy, in
//! three layers that import only downward, as Istio keeps `pilot/pkg/model`,
//! `networking/core` and `xds` apart:
//!
//! ```text
//! state/      the model of the world and its durable copies
//!   snapshot    one consistent state: a map of meshes by name (no first mesh)
//!   store       checked changes, written durably, then published to watchers
//!   meta        App Mesh metadata of each resource
//!   persist     redb, and DynamoDB for replicas (persist/dynamo)
//!   aws         what the AWS SDK clients share
//!   weights     the rule of `route set`
//!   placement   where each node's Envoy and app are, Cloud Map instances
//!   cloudmap    Cloud Map lookups (for `serve`)
//!   observed    the traffic each target node received
//! translate/  App Mesh resources -> one node's Envoy listeners, clusters and routes
//!   gateway     a virtual gateway's
//! secrets/    TLS secrets served over SDS: ACM certificates and Private CA trust
//!   acm         exported from ACM and AWS Private CA, made into Envoy secrets
//!   refresh     fetched when named, re-read on a schedule and before expiry
//! xds/        serving it
//!   encoded     a type's resources encoded once
//!   cache       each node's resources, built once per snapshot version
//!   ads         the ADS server (state of the world, xDS v3)
//! ```
//!
//! The rule: `state <- translate <- secrets <- xds` (an arrow points at what is imported),
//! checked by the `layers` test. This crate depends on the mesh model alone. It imports no API and
//! no runtime; those depend on it (`gophermesh`'s `api` and `runtime`).
#![forbid(unsafe_code)]

pub mod secrets;
pub mod state;
pub mod translate;
pub mod xds;

pub use state::meta::{Identity, Meta};
pub use state::observed::{TargetTraffic, on_route, route_target_key};
pub use state::placement::Placement;
pub use state::snapshot::{MeshState, PickError, Snapshot};
pub use state::store::{Next, Store, UpdateError};
pub use translate::ROUTE_MARK;
pub use xds::cache::Cache;
