//! The control plane: one store of mesh state, the translation to Envoy resources, and
//! the ADS server that streams them to every sidecar.

pub mod ads;
pub mod api;
pub mod appmesh;
pub mod sigv4;
pub mod store;
pub mod translate;
