//! The control API's bearer token: 32 random bytes from the kernel, made anew each time a
//! control plane starts, written to `STATE_DIR/control-token` (mode 0600, so only its
//! owner reads it) and read from there by the CLI. It is printed nowhere.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The file name under the state directory.
pub const TOKEN_FILE: &str = "control-token";

/// A control token. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlToken(String);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(<hidden>)")
    }
}

impl ControlToken {
    /// A new random token.
    pub fn generate() -> std::io::Result<Self> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// A token with the given text (for tests and for `GOPHERMESH_CONTROL_TOKEN`).
    pub fn from_text(text: &str) -> Self {
        Self(text.trim().to_owned())
    }

    /// The text to send as `Authorization: Bearer TEXT`.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// Writes the token to `STATE_DIR/control-token`, readable by its owner alone; the path.
    pub fn write(&self, state_dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(TOKEN_FILE);
        // Removed first, so that a file made earlier with looser permissions (or a link
        // placed there) is not written through.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(self.0.as_bytes())?;
        file.write_all(b"\n")?;
        Ok(path)
    }

    /// Reads the token written by [`ControlToken::write`] in `state_dir`.
    pub fn read(state_dir: &Path) -> std::io::Result<Self> {
        let path = state_dir.join(TOKEN_FILE);
        let text = meshmodel::input::read_text(&path, 1024)?;
        Ok(Self::from_text(&text))
    }

    /// Whether `presented` is this token, compared in time that does not depend on where
    /// the first difference is.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.trim().as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_written_token_is_private_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("gophermesh-token-{}", std::process::id()));
        let token = ControlToken::generate().expect("random");
        assert_eq!(token.text().len(), 64);
        assert_ne!(token, ControlToken::generate().expect("random"));
        let path = token.write(&dir).expect("written");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ControlToken::read(&dir).expect("read"), token);
        assert!(token.matches(token.text()));
        assert!(!token.matches("nope"));
        assert!(!format!("{token:?}").contains(token.text()));
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }
}
