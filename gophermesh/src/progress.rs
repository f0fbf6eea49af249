//! Progress lines for long steps, on standard output: `==> what is happening`.

/// Prints one progress line.
pub fn say(message: impl std::fmt::Display) {
    println!("==> {message}");
}

/// `text` with control characters (escape sequences, newlines) and Unicode format
/// characters (bidirectional overrides and isolates, zero-width characters) written as
/// `\u{..}`, so that names from a mesh or a caller can neither move the cursor, rewrite a
/// terminal line, nor show themselves in another order than they are.
pub fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() || is_format(c) {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Whether `c` is a Unicode format character (general category Cf): invisible, and some
/// reorder the text around them.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// How the banners of `up` and `serve` name the ADS address in their control-plane line.
pub const ADS_ON: &str = "ADS on ";
/// How `up`'s banner names the control API in its control-plane line.
pub const CONTROL_API: &str = "control API on ";
/// How `up`'s banner names the App Mesh API in its control-plane line.
pub const APPMESH_API: &str = "App Mesh API on ";
/// How `up`'s banner says where the requester answers.
pub const REQUESTER_AT: &str = "The requester answers at ";
/// What the banner says before the published ingress gateway's URL.
pub const GATEWAY_AT: &str = "The ingress gateway answers at ";

/// The addresses a `gophermesh up` printed in its banner, for programs that start one
/// with port 0 (the benchmark, the tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpAddresses {
    /// `HOST:PORT` of the ADS server.
    pub xds: Option<String>,
    /// `http://127.0.0.1:PORT` of the published requester.
    pub requester: Option<String>,
    /// `http://127.0.0.1:PORT` of the published ingress gateway, when there is one.
    pub gateway: Option<String>,
    /// `http://ADDR` of the control API.
    pub control: Option<String>,
    /// `http://ADDR` of the App Mesh API.
    pub appmesh: Option<String>,
}

impl UpAddresses {
    /// Takes what `line` of the banner says.
    pub fn read(&mut self, line: &str) {
        let url_after = |marker: &str| {
            line.split_once(marker).map(|(_, rest)| {
                rest.split([',', ' '])
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_owned()
            })
        };
        if let Some(addr) = url_after(ADS_ON) {
            self.xds = Some(addr);
        }
        if let Some(url) = url_after(REQUESTER_AT) {
            self.requester = Some(url);
        }
        if let Some(url) = url_after(GATEWAY_AT) {
            self.gateway = Some(url);
        }
        if let Some(url) = url_after(CONTROL_API) {
            self.control = Some(url);
        }
        if let Some(url) = url_after(APPMESH_API) {
            self.appmesh = Some(url);
        }
    }
}

/// Where `program` is on `PATH`: the first directory of `PATH` that has a file of that name.
pub fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// How a person at this shell runs `program` (`gophermesh`, `aws`) as the running
/// process finds it: its path relative to the working directory when it is under it
/// (`target/release/gophermesh`, `.venv/bin/aws`), else as found (absolute, or the bare
/// name when it is not found at all). `scripts/up.sh` puts `target/release` and
/// `.venv/bin` on its own PATH, not on the user's, so the banner's commands say where the
/// programs are.
pub fn command_here(program: &str) -> String {
    let found = if program == "gophermesh" {
        std::env::current_exe().ok()
    } else {
        on_path(program)
    };
    let Some(found) = found else {
        return program.to_owned();
    };
    let relative = std::env::current_dir().ok().and_then(|cwd| {
        found
            .strip_prefix(cwd)
            .ok()
            .map(std::path::Path::to_path_buf)
    });
    match relative {
        Some(rel) if rel.components().count() > 1 => rel.display().to_string(),
        Some(rel) => format!("./{}", rel.display()),
        None => found.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_do_not_reach_the_terminal() {
        assert_eq!(escape("v1\x1b[2J\r\n"), "v1\\u{1b}[2J\\u{d}\\u{a}");
        assert_eq!(escape("gopher-é"), "gopher-é");
    }

    #[test]
    fn format_characters_cannot_reorder_or_hide_text() {
        // A right-to-left override would show `evil-txt.exe` as `evil-exe.txt`.
        assert_eq!(escape("evil-\u{202E}txt.exe"), "evil-\\u{202e}txt.exe");
        assert_eq!(
            escape("x\u{200B}y\u{2066}z\u{FEFF}"),
            "x\\u{200b}y\\u{2066}z\\u{feff}"
        );
        assert_eq!(escape("v2 → ümlaut 🐹"), "v2 → ümlaut 🐹");
    }

    #[test]
    fn the_banner_names_every_address() {
        let mut a = UpAddresses::default();
        a.read("==> control plane: ADS on 127.0.0.1:41105, control API on http://127.0.0.1:9990, App Mesh API on http://127.0.0.1:9991 (SigV4 required)");
        a.read("gophermesh is up in 0.6 s. The requester answers at http://127.0.0.1:8080/");
        assert_eq!(a.requester.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(a.xds.as_deref(), Some("127.0.0.1:41105"));
        assert_eq!(a.control.as_deref(), Some("http://127.0.0.1:9990"));
        assert_eq!(a.appmesh.as_deref(), Some("http://127.0.0.1:9991"));
    }
}
