//! The `gophermesh` command's library: each subcommand is a module with a `run` function
//! that `main` calls.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod controlplane;
pub mod hello;
pub mod images;
pub mod netns;
pub mod pods;
pub mod render;
pub mod supervise;
pub mod up;
pub mod validate;
