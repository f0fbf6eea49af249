//! App Mesh resources in the GA API shapes (version 2019-01-25), as botocore's `appmesh`
//! model defines the `Create*` inputs. Each file under `mesh/` is one of these.
//!
//! Unknown fields are rejected, so a typo or a feature the local mesh does not implement
//! is an error that names the field rather than something silently ignored. Numbers are
//! parsed wide and range-checked by the mesh's checks (`Mesh::check`), so the message can
//! give the range.
//!
//! ```text
//! shared           tags, ports and protocols, durations, what several kinds share
//! mesh             CreateMesh
//! virtual_node     CreateVirtualNode: listeners, backends, service discovery, TLS
//! virtual_router   CreateVirtualRouter
//! route            CreateRoute: HTTP, HTTP/2, gRPC and TCP routes, retries, timeouts
//! virtual_service  CreateVirtualService
//! virtual_gateway  CreateVirtualGateway
//! gateway_route    CreateGatewayRoute
//! ```

mod gateway_route;
mod mesh;
mod route;
mod shared;
mod virtual_gateway;
mod virtual_node;
mod virtual_router;
mod virtual_service;

pub use gateway_route::*;
pub use mesh::*;
pub use route::*;
pub use shared::*;
pub use virtual_gateway::*;
pub use virtual_node::*;
pub use virtual_router::*;
pub use virtual_service::*;
