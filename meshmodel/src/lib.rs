//! One typed model of the App Mesh resources this project runs, and of the ECS task
//! definitions that run them.
//!
//! - [`appmesh`]: the GA API shapes (2019-01-25), one type per `Create*` input.
//! - [`resource`]: one resource file, its kind told by its name fields.
//! - [`mesh`]: every resource of a mesh, with the checks that span resources.
//! - [`node_id`]: the Envoy node id of a virtual node, both ways.
//! - [`ecs`]: ECS task definitions, with the APPMESH proxy configuration parsed.
//! - [`taskdef`]: checks that the task definitions fit the mesh.
//! - [`import`]: App Mesh as users wrote it: CloudFormation templates and the EKS
//!   controller's Kubernetes objects, told apart from App Mesh JSON by their content.
//! - [`input`]: input files read with a size limit, regular files only, BOM dropped.
//! - [`render`]: `${VAR}` placeholders filled from the environment.
//!
//! Everything that reads input reports [`Problem`]s: the origin (file), the JSON path and
//! the reason.
#![forbid(unsafe_code)]

pub mod appmesh;
pub mod ecs;
pub mod import;
pub mod input;
pub mod mesh;
pub mod node_id;
pub mod problem;
pub mod render;
pub mod resource;
pub mod taskdef;

pub use mesh::Mesh;

/// The mesh tag that switches on the mutual TLS the mesh sets up by itself: `STRICT`,
/// `PERMISSIVE` or `DISABLED` (gophermesh's own; App Mesh ignores it as any tag).
pub const MTLS_TAG: &str = "gophermesh:mtls";
pub use node_id::{GATEWAY_PREFIX, gateway_from_id, node_from_id, node_id};
pub use problem::{Problem, Problems};
pub use resource::{Key, Kind, Resource};

/// Loads and checks a mesh directory and a task definitions directory together: the mesh
/// and its tasks, or every problem found in either.
pub fn load(
    mesh_dir: &std::path::Path,
    taskdefs_dir: &std::path::Path,
) -> Result<(Mesh, Vec<taskdef::Task>), Problems> {
    let mesh = Mesh::load_dir(mesh_dir);
    let defs = taskdef::load_dir(taskdefs_dir);
    match (mesh, defs) {
        (Ok(mesh), Ok(defs)) => {
            let tasks = taskdef::check(&mesh, &defs)?;
            Ok((mesh, tasks))
        }
        (Err(Problems(mut a)), Err(Problems(b))) => {
            a.extend(b);
            Err(Problems(a))
        }
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    }
}
