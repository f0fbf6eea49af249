//! One file per subcommand: each turns its flags into typed configuration and calls the
//! library. Nothing in the library imports this layer (it lives in the binary).

pub(crate) mod apply;
pub(crate) mod bench;
pub(crate) mod bootstrap;
pub(crate) mod certificates;
pub(crate) mod console;
pub(crate) mod control;
pub(crate) mod convert;
pub(crate) mod export;
pub(crate) mod images;
pub(crate) mod render;
pub(crate) mod rollout;
pub(crate) mod route;
pub(crate) mod serve;
pub(crate) mod sidecar;
pub(crate) mod status;
pub(crate) mod up;
pub(crate) mod validate;
