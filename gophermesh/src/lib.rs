//! The `gophermesh` library: everything the `gophermesh` command runs, apart from the
//! command line itself.
//!
//! ```text
//! config     typed configuration of the long-running commands (up, bench)
//! plane/     the application assembled: store, ADS, APIs, TLS, Cloud Map; `up` (plane/up)
//! api/       the App Mesh REST API (appmesh/, sigv4) and the control API (control)
//! runtime/   running tasks here: the Backend trait with loopback, namespaces and pods
//!            backends; Envoy (bootstrap, arguments, admin), supervision, images, publish
//! bench/     what the mesh costs: load, report, scale, the hello floor, a large template
//! sidecar/   `gophermesh sidecar`: the aws-appmesh-envoy agent's job for a current Envoy
//! mesh_files the mesh directory as files: a resource's file, written safely
//! progress   the `==>` progress lines
//! ```
//!
//! The control plane (store, persistence, cache, translation, ADS) is the `controlplane`
//! crate; the mesh model is `meshmodel`. The command layer (`cli`, `commands/`) lives in
//! the binary, so nothing here can import it. The rule: `commands -> plane -> {api,
//! runtime, controlplane} -> meshmodel`; `api -> controlplane`; the runtime reads only the control
//! plane's placement types.
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod config;
pub mod export;
pub mod mesh_files;
pub mod metrics;
pub mod plane;
pub mod progress;
pub mod runtime;
pub mod sidecar;
