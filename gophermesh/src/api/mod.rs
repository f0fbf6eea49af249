//! The HTTP APIs of a running control plane, both over the control plane's store:
//!
//! ```text
//! appmesh/  the App Mesh REST API (2019-01-25) that the AWS CLI and SDKs speak
//! sigv4     AWS Signature Version 4, checked on the server side
//! control   the control API of `gophermesh status`, `route set` and `apply`
//! apply     its POST /v1/resources: one resource, or many as one change, or a dry run
//! rollouts  its /v1/rollouts: start, list, pause, resume, abort
//! answers   its answers: made, refused, not stored
//! console   the web console page (assets compiled in)
//! live      the console's live view: /v1/live and its event stream
//! guard     what stands before both: Host, body limits, authentication, concurrency
//! token     the control API's bearer token
//! tasks     what the APIs show of the tasks, told by whoever runs them
//! status    the control API's status, one type for the API and its readers
//! ```
//!
//! The APIs import the control plane and nothing of the runtime: what the control API
//! shows of the tasks comes through the [`tasks::Tasks`] trait.

mod answers;
pub mod apply;
pub mod appmesh;
pub mod console;
pub mod control;
pub mod guard;
pub mod live;
pub mod rollouts;
pub mod sigv4;
pub mod status;
pub mod tasks;
pub mod token;
