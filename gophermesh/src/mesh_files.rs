//! The mesh directory as files: which file holds a resource (or would), and writing one
//! there without following links or leaving the directory (`route set --save`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meshmodel::Resource;

/// The file under `mesh_dir` that holds `resource`, or the one it would get.
pub fn save_path(mesh_dir: &Path, resource: &Resource) -> anyhow::Result<PathBuf> {
    let key = resource.key();
    let files = meshmodel::mesh::json_files(mesh_dir)
        .with_context(|| format!("--save: cannot read --mesh-dir {}", mesh_dir.display()))?;
    for file in files {
        let Ok(text) = meshmodel::input::read_text(&file, meshmodel::input::MAX_FILE) else {
            continue;
        };
        if let Ok(found) = Resource::parse(&file.display().to_string(), &text) {
            if found.key() == key && found.mesh_name() == resource.mesh_name() {
                return Ok(file);
            }
        }
    }
    let meshmodel::Key::Route(_, name) = &key else {
        bail!("--save: only routes are saved");
    };
    if !file_safe(name) {
        bail!(
            "--save: no file under {} holds route `{}`, and its name cannot be a file name (letters, digits, `-`, `_` and `.` only, not starting with `.`); nothing written",
            mesh_dir.display(),
            name.escape_debug()
        );
    }
    let path = mesh_dir.join("routes").join(format!("{name}.json"));
    if path.exists() {
        bail!(
            "--save: {} holds another resource (another mesh's route of that name?); nothing written",
            path.display()
        );
    }
    Ok(path)
}

/// Whether `name` can be a file name as it is: letters, digits, `-`, `_` and `.`, not
/// starting with `.`.
pub fn file_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Writes `text` to `path` (under `mesh_dir`) by renaming a new file over it. Refused when
/// `path` is a link or not a regular file, or when its directory is not inside `mesh_dir`
/// (a linked `routes/` leading elsewhere). The new file has a random name and is created
/// exclusively, without following a link, so nothing planted beside it is written through.
pub fn write_replacing(mesh_dir: &Path, path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            bail!("it is not a regular file (a link or a device); nothing written");
        }
    }
    let dir = path.parent().context("a file has a directory")?;
    std::fs::create_dir_all(dir)?;
    let (inside, within) = (dir.canonicalize()?, mesh_dir.canonicalize()?);
    if !inside.starts_with(&within) {
        bail!(
            "{} leads to {}, outside --mesh-dir {}; nothing written",
            dir.display(),
            inside.display(),
            within.display()
        );
    }
    let fresh = inside.join(format!(
        ".{}.{:016x}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        fastrand::u64(..)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&fresh)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&fresh);
        return Err(e.into());
    }
    std::fs::rename(&fresh, inside.join(path.file_name().unwrap_or_default()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_file_names() {
        for ok in ["distributor", "route-1", "a_b.c"] {
            assert!(file_safe(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "../x", "a/b", "$(touch x)", "a b", "é"] {
            assert!(!file_safe(bad), "{bad}");
        }
    }

    /// A directory of its own under the system's temporary directory.
    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gophermesh-save-{label}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    /// A link planted where the temporary file used to be named (`.NAME.json.PID.tmp`)
    /// is not written through, and the route is saved.
    #[test]
    fn a_planted_link_beside_the_file_is_not_followed() {
        let root = scratch("planted");
        let (mesh_dir, target) = (root.join("mesh"), root.join("victim"));
        std::fs::create_dir_all(mesh_dir.join("routes")).expect("routes");
        std::fs::write(&target, "untouched").expect("victim");
        let path = mesh_dir.join("routes/distributor.json");
        let planted = mesh_dir.join(format!(
            "routes/.distributor.json.{}.tmp",
            std::process::id()
        ));
        std::os::unix::fs::symlink(&target, &planted).expect("planted");
        write_replacing(&mesh_dir, &path, "{}\n").expect("saved");
        assert_eq!(
            std::fs::read_to_string(&target).expect("victim"),
            "untouched"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("saved"), "{}\n");
        std::fs::remove_dir_all(&root).expect("cleaned");
    }

    /// `routes/` linked to a directory outside --mesh-dir: refused, nothing written there.
    #[test]
    fn a_linked_directory_cannot_lead_out_of_the_mesh_dir() {
        let root = scratch("linked");
        let (mesh_dir, outside) = (root.join("mesh"), root.join("outside"));
        std::fs::create_dir_all(&mesh_dir).expect("mesh");
        std::fs::create_dir_all(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, mesh_dir.join("routes")).expect("linked");
        let err = write_replacing(&mesh_dir, &mesh_dir.join("routes/distributor.json"), "{}")
            .expect_err("refused");
        assert!(err.to_string().contains("outside --mesh-dir"), "{err}");
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
        std::fs::remove_dir_all(&root).expect("cleaned");
    }

    /// A link where the route's file is: refused, its target untouched.
    #[test]
    fn the_file_itself_as_a_link_is_refused() {
        let root = scratch("itself");
        let (mesh_dir, target) = (root.join("mesh"), root.join("victim"));
        std::fs::create_dir_all(mesh_dir.join("routes")).expect("routes");
        std::fs::write(&target, "untouched").expect("victim");
        let path = mesh_dir.join("routes/distributor.json");
        std::os::unix::fs::symlink(&target, &path).expect("link");
        assert!(write_replacing(&mesh_dir, &path, "{}").is_err());
        assert_eq!(
            std::fs::read_to_string(&target).expect("victim"),
            "untouched"
        );
        std::fs::remove_dir_all(&root).expect("cleaned");
    }
}
