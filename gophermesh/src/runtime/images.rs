//! `gophermesh images build`: the service images and the Envoy sidecar image, built offline
//! with podman FROM scratch (no registry needed): each context holds the binary, the shared
//! libraries `ldd` names, and an /etc/passwd for the image's user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// One image gophermesh builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// The local name, `gophermesh/NAME:TAG`.
    pub name: &'static str,
    /// The binary it runs: `requester`, `distributor` or `envoy`.
    pub binary: &'static str,
    /// The OCI title label.
    pub title: &'static str,
    /// `GOPHER_VERSION` baked into a distributor image.
    pub gopher_version: Option<&'static str>,
}

impl Image {
    /// Whether this is the Envoy sidecar's image (the others run one service each).
    pub fn is_sidecar(&self) -> bool {
        *self == SIDECAR
    }
}

/// Every image, the services' first: the one list the builder, `up --containers`, the
/// benchmark and the tests read.
pub const IMAGES: [Image; 4] = [
    Image {
        name: "gophermesh/requester:latest",
        binary: "requester",
        title: "gophermesh requester",
        gopher_version: None,
    },
    Image {
        name: "gophermesh/distributor:v1",
        binary: "distributor",
        title: "gophermesh distributor",
        gopher_version: Some("v1"),
    },
    Image {
        name: "gophermesh/distributor:v2",
        binary: "distributor",
        title: "gophermesh distributor",
        gopher_version: Some("v2"),
    },
    SIDECAR,
];

/// The sidecar for after App Mesh, and `up --containers`' Envoy: a current Envoy under
/// `gophermesh sidecar`, which reads the aws-appmesh-envoy image's environment.
pub const SIDECAR: Image = Image {
    name: "gophermesh/gophermesh-envoy:latest",
    binary: "gophermesh",
    title: "gophermesh envoy sidecar (the agent's environment, a current Envoy)",
    gopher_version: None,
};

/// The tools the sidecar image carries for a task definition's health check, each with
/// the Debian package that has it.
const HEALTH_CHECK_TOOLS: [(&str, &str); 3] =
    [("dash", "dash"), ("curl", "curl"), ("grep", "grep")];

/// The control plane image (`gophermesh serve`), for ECS: built only when asked
/// (`images build --control-plane`), never by `up`.
pub const CONTROL_PLANE: Image = Image {
    name: "gophermesh/control-plane:latest",
    binary: "gophermesh",
    title: "gophermesh control plane",
    gopher_version: None,
};

/// A task definition's image, as gophermesh runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The local image: the part from `gophermesh/` on
    /// (`${IMAGE_REPOSITORY}/gophermesh/distributor:v1` -> `gophermesh/distributor:v1`).
    pub local: String,
    /// The binary it stands for: its last path segment without the tag (`distributor`).
    pub binary: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Self {
        let local = image
            .find("gophermesh/")
            .map_or(image, |i| &image[i..])
            .to_owned();
        let without_tag =
            image.rsplit_once(':').map_or(
                image,
                |(repo, tag)| {
                    if tag.contains('/') { image } else { repo }
                },
            );
        let binary = without_tag
            .rsplit('/')
            .next()
            .unwrap_or(without_tag)
            .to_owned();
        Self { local, binary }
    }
}

const CONTAINERS_CONF: &str = include_str!("../../../docker/containers.conf");
const SCRATCH: &str = include_str!("../../../docker/Containerfile.scratch");
/// Where Debian keeps the trusted CA certificates, and where rustls looks for them.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CONTROL_PLANE_FILE: &str = include_str!("../../../docker/Containerfile.control-plane");
const SIDECAR_FILE: &str = include_str!("../../../docker/Containerfile.sidecar");

use crate::progress::say;

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
        super::supervise::run_checked(self.command().args(args), "cannot run podman")
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
    // Writable by every user, sticky, as /tmp is (the sidecar writes Envoy's bootstrap
    // there).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    add_binary(&rootfs, binary, target)?;
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

/// `binary` at `target` under `rootfs`, with the libraries it needs.
fn add_binary(rootfs: &Path, binary: &Path, target: &str) -> anyhow::Result<()> {
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
    Ok(())
}

/// The sidecar image's context: Envoy at /usr/bin/envoy (as in the agent's image), the
/// `gophermesh` binary, a shell, curl and grep for the health check, and this machine's
/// trusted CAs at /etc/pki/tls/cert.pem.
fn sidecar_context(dir: &Path, gophermesh: &Path, envoy: &Path) -> anyhow::Result<()> {
    context(dir, envoy, "/usr/bin/envoy", ("envoy", 1337), SIDECAR_FILE)?;
    let rootfs = dir.join("rootfs");
    add_binary(&rootfs, gophermesh, "/usr/bin/gophermesh")?;
    for (tool, package) in HEALTH_CHECK_TOOLS {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file())
            .with_context(|| {
                format!("{tool} is missing (the health check needs it): apt-get install {package}")
            })?;
        add_binary(&rootfs, &found, &format!("/usr/bin/{tool}"))?;
    }
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::os::unix::fs::symlink("/usr/bin/dash", rootfs.join("bin/sh"))?;
    let to = rootfs.join("etc/pki/tls/cert.pem");
    std::fs::create_dir_all(to.parent().context("a directory")?)?;
    std::fs::copy(CA_BUNDLE, &to).with_context(|| {
        format!("cannot copy {CA_BUNDLE} (on Debian: apt-get install ca-certificates)")
    })?;
    Ok(())
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

/// Builds `images` (every one, made or not); returns (name, size in bytes). Builds on
/// this machine take turns.
pub fn build_all(
    podman: &Podman,
    bin_dir: &Path,
    envoy: &Path,
    work: &Path,
    images: &[Image],
) -> anyhow::Result<Vec<(String, u64)>> {
    let _turn = build_lock()?;
    build_unlocked(podman, bin_dir, envoy, work, images)
}

fn build_unlocked(
    podman: &Podman,
    bin_dir: &Path,
    envoy: &Path,
    work: &Path,
    images: &[Image],
) -> anyhow::Result<Vec<(String, u64)>> {
    let revision = revision();
    let version = env!("CARGO_PKG_VERSION");
    let envoy = super::envoy::real_envoy(envoy)?;
    let mut built = Vec::new();
    for &image in images {
        let name = image.name;
        let binary = bin_dir.join(image.binary);
        let image_version = image.gopher_version.unwrap_or(version);
        if !binary.is_file() {
            bail!(
                "{} is missing (build it with cargo build --release --workspace --bins, or set --bin-dir)",
                binary.display()
            );
        }
        let dir = work.join(name.replace(['/', ':'], "-"));
        let is_envoy = image.is_sidecar();
        if is_envoy {
            sidecar_context(&dir, &binary, &envoy)?;
        } else if image == CONTROL_PLANE {
            context(&dir, &binary, "/app", ("app", 10001), CONTROL_PLANE_FILE)?;
            std::fs::create_dir_all(dir.join("state"))?;
            // It speaks TLS to DynamoDB (and STS): the trusted roots of this machine.
            let bundle = Path::new(CA_BUNDLE);
            let to = dir.join("rootfs").join(CA_BUNDLE.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().expect("a directory"))?;
            std::fs::copy(bundle, &to).with_context(|| {
                format!("cannot copy {CA_BUNDLE} (on Debian: apt-get install ca-certificates)")
            })?;
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
            format!("TITLE={}", image.title),
        ];
        let envoy_version = if is_envoy {
            envoy_version(&envoy)
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
        if let Some(v) = image.gopher_version {
            args.extend(["--build-arg".into(), format!("GOPHER_VERSION={v}")]);
        }
        // Which build of the binary it holds, so that a newer build is noticed.
        args.extend([
            "--label".into(),
            format!(
                "{BINARY_LABEL}={}",
                image_fingerprint(image, &binary, &envoy)
            ),
        ]);
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

/// The image label naming the build of the binary an image holds.
const BINARY_LABEL: &str = "io.gophermesh.binary";

/// A binary's build, as size and modification time (what changes when cargo rebuilds it).
/// The size in bytes of the local image `name`, when podman has it.
pub fn image_size(name: &str) -> Option<f64> {
    Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", name])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
}

/// Which builds an image holds: its binary's, and Envoy's for the sidecar.
fn image_fingerprint(image: Image, binary: &Path, envoy: &Path) -> String {
    if image.is_sidecar() {
        format!("{}+{}", fingerprint(binary), fingerprint(envoy))
    } else {
        fingerprint(binary)
    }
}

fn fingerprint(binary: &Path) -> String {
    std::fs::metadata(binary)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}-{modified}", m.len())
        })
        .unwrap_or_default()
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

/// Holds the lock that serializes image builds on this machine (two runs building the
/// same tags at once would remove each other's images), for as long as it is kept.
fn build_lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = std::env::temp_dir().join("gophermesh-images.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the image build lock {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
}

/// Builds every image of [`IMAGES`] unless all are there already (checked under the
/// build lock, so runs that start together build once).
pub fn ensure_all(
    podman: &Podman,
    bin_dir: &Path,
    envoy: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    ensure(podman, bin_dir, envoy, work, &IMAGES).map(|_| ())
}

/// Builds `images` unless all are there already and made from the binaries here now;
/// returns what was built (name, size in bytes), nothing when all were there.
pub fn ensure(
    podman: &Podman,
    bin_dir: &Path,
    envoy: &Path,
    work: &Path,
    images: &[Image],
) -> anyhow::Result<Vec<(String, u64)>> {
    let envoy_binary = super::envoy::real_envoy(envoy)?;
    // Missing, or made from another build of its binary than the one here now.
    let missing = || -> Vec<&str> {
        images
            .iter()
            .filter(|i| {
                let binary = bin_dir.join(i.binary);
                !podman.has_image(i.name)
                    || podman
                        .run(&[
                            "image",
                            "inspect",
                            "--format",
                            &format!("{{{{ index .Labels \"{BINARY_LABEL}\" }}}}"),
                            i.name,
                        ])
                        .ok()
                        .as_deref()
                        != Some(image_fingerprint(**i, &binary, &envoy_binary).as_str())
            })
            .map(|i| i.name)
            .collect()
    };
    if missing().is_empty() {
        return Ok(Vec::new());
    }
    let _turn = build_lock()?;
    let still = missing();
    if still.is_empty() {
        return Ok(Vec::new());
    }
    say(format!(
        "building the images that are missing or older than their binaries ({})",
        still.join(", ")
    ));
    build_unlocked(podman, bin_dir, envoy, work, images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definition_images_name_their_local_image_and_binary() {
        for (image, local, binary) in [
            (
                "${IMAGE_REPOSITORY}/gophermesh/distributor:v1",
                "gophermesh/distributor:v1",
                "distributor",
            ),
            (
                "gophermesh/requester:latest",
                "gophermesh/requester:latest",
                "requester",
            ),
            (
                "localhost:5000/gophermesh/requester",
                "gophermesh/requester",
                "requester",
            ),
            ("requester", "requester", "requester"),
            ("nginx:1", "nginx:1", "nginx"),
        ] {
            let parsed = ImageRef::parse(image);
            assert_eq!(
                (parsed.local.as_str(), parsed.binary.as_str()),
                (local, binary),
                "{image}"
            );
        }
    }

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
