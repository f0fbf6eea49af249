//! `gophermesh images build`: the four images (and the control plane's when asked),
//! offline with podman.

use std::process::ExitCode;

use gophermesh::runtime::images::{CONTROL_PLANE, IMAGES, Podman, build_all, ensure};
use gophermesh::runtime::{bin_dir, envoy};

use crate::cli::ImagesBuildArgs;

pub(crate) fn run(args: &ImagesBuildArgs) -> anyhow::Result<ExitCode> {
    let podman = Podman::new(&args.state_dir)?;
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    let envoy = envoy::find(args.envoy_bin.as_deref())?;
    let work = std::path::absolute(args.state_dir.join("images"))?;
    let mut images = IMAGES.to_vec();
    if args.control_plane {
        images.push(CONTROL_PLANE);
    }
    let built = if args.if_missing {
        ensure(&podman, &bin_dir, &envoy, &work, &images)?
    } else {
        build_all(&podman, &bin_dir, &envoy, &work, &images)?
    };
    if built.is_empty() {
        println!("every image is there, made from the binaries here; nothing to build");
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    for (name, size) in built {
        println!("{name:<32} {:>7.1} MB", size as f64 / 1e6);
    }
    Ok(ExitCode::SUCCESS)
}
