//! Serving the translation to Envoys over xDS.
//!
//! ```text
//! encoded    one node's resources of one type, encoded once and shared
//! cache      each node's resources, built once per snapshot version
//! vhds       route configurations split from their virtual hosts, for delta Envoys
//! listing    a type's resources as delta streams send them, and what changed between two
//! ads        the ADS server (state of the world and delta, xDS v3) streaming from the cache
//!   link       what a stream knows of its Envoy, whichever protocol it speaks
//!   delta      the delta (incremental) protocol
//!   wire       the gRPC framing, with shared resource bytes
//! ```
//!
//! It reads the state and the translation; neither imports it.

pub mod ads;
pub mod cache;
pub mod encoded;
pub mod listing;
pub mod vhds;
