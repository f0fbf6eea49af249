//! The gophermesh control plane: the state of the mesh and how it reaches Envoy.
//!
//! ```text
//! store      the one store of mesh state: snapshots, checked changes, a watch channel
//!   meta       App Mesh metadata of each resource (ARN, uid, version, times, token)
//!   persist    the durable copy (redb), one transaction per accepted change
//!   weights    the rule of `route set`
//! placement  where each node's Envoy and app are (told by whoever runs the tasks)
//! cloudmap   the instances of Cloud Map nodes, looked up (for `serve`)
//! observed   the traffic each target node received (told by whoever reads the Envoys)
//! translate  App Mesh resources -> one node's Envoy listeners, clusters and routes
//! cache      each node's resources, built once per snapshot version
//! ads        the ADS server (state of the world, xDS v3) streaming from the cache
//! ```
//!
//! The rule: this crate depends on the mesh model alone. It imports no API and no
//! runtime; those depend on it (`gophermesh`'s `api` and `runtime`).
#![forbid(unsafe_code)]

pub mod ads;
pub mod cache;
pub mod cloudmap;
pub mod meta;
pub mod observed;
pub mod persist;
pub mod placement;
pub mod store;
pub mod translate;
pub mod weights;

pub use cache::Cache;
pub use meta::{Identity, Meta};
pub use observed::TargetTraffic;
pub use placement::Placement;
pub use store::{Next, Snapshot, Store, UpdateError};
