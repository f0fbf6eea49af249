//! Reading input files safely: regular files only, at most a given size, UTF-8, with a
//! leading byte order mark dropped (editors on Windows write one).
//!
//! `apply -f /dev/zero`, or a link to it in `mesh/`, is refused at once instead of read
//! without end; so is a FIFO, which is opened without waiting for a writer.

use std::io::Read as _;
use std::path::Path;

/// The largest mesh, task definition or resource file read (App Mesh's own request limit
/// is far below this).
pub const MAX_FILE: u64 = 1 << 20;

/// Reads `path` as text, refusing anything that is not a regular file or is over `limit`
/// bytes, with the reason in the error.
pub fn read_text(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking, so that opening a FIFO does not wait for a writer (it is refused
    // below, as not a regular file); a regular file reads as ever.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, pipe or directory is not read)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_big_files_and_boms() {
        let err = read_text(Path::new("/dev/zero"), MAX_FILE).expect_err("a device");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let dir = std::env::temp_dir().join(format!("gophermesh-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let link = dir.join("zero.json");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).expect("link");
        assert!(read_text(&link, MAX_FILE).is_err(), "a link to a device");
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; 11]).expect("write");
        let err = read_text(&big, 10).expect_err("too big");
        assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
        let bom = dir.join("bom.json");
        std::fs::write(&bom, "\u{feff}{}").expect("write");
        assert_eq!(read_text(&bom, 10).expect("read"), "{}");
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }

    /// A FIFO (in a mesh directory, or named by `apply -f` or `--tls-cert`) is refused at
    /// once: it is not waited on for a writer that never comes.
    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let dir = std::env::temp_dir().join(format!("gophermesh-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("route.json");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", fifo.display());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_text(&path, MAX_FILE).map_err(|e| e.to_string()));
        });
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("an answer, not a wait for a writer");
        let err = answer.expect_err("a FIFO is not read");
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }
}
