//! Serving the translation to Envoys over xDS.
//!
//! ```text
//! encoded    one node's resources of one type, encoded once and shared
//! cache      each node's resources, built once per snapshot version
//! ads        the ADS server (state of the world, xDS v3) streaming from the cache
//!   wire       the gRPC framing, with shared resource bytes
//! ```
//!
//! It reads the state and the translation; neither imports it.

pub mod ads;
pub mod cache;
pub mod encoded;
