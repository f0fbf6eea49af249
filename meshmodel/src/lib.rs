//! One typed model of the App Mesh resources this project runs, and of the ECS task
//! definitions that run them.
//!
//! - [`appmesh`]: the GA API shapes (2019-01-25), one type per `Create*` input.
//! - [`resource`]: one resource file, its kind told by its name fields.
//! - [`mesh`]: every resource of a mesh, with the checks that span resources.
//! - [`ecs`]: ECS task definitions, with the APPMESH proxy configuration parsed.
//! - [`taskdef`]: checks that the task definitions fit the mesh.
//! - [`render`]: `${VAR}` placeholders filled from the environment.
//!
//! Everything that reads input reports [`Problem`]s: the origin (file), the JSON path and
//! the reason.
#![forbid(unsafe_code)]

pub mod appmesh;
pub mod ecs;
pub mod mesh;
pub mod problem;
pub mod render;
pub mod resource;
pub mod taskdef;

pub use mesh::Mesh;
pub use problem::{Problem, Problems};
pub use resource::{Key, Kind, Resource};
