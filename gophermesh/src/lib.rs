//! The `gophermesh` command's library: each subcommand is a module with a `run` function
//! that `main` calls.
#![forbid(unsafe_code)]

pub mod cli;
pub mod render;
pub mod validate;
