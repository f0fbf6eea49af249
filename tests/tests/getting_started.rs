//! The book's getting-started page runs as written: every console block marked
//! `<!-- test -->` is run command by command (`$ ` lines, through bash, from the repository's
//! root) and what each prints is compared with the lines under it; the block marked
//! `<!-- test: start -->` is started first and left running (`scripts/up.sh`) until the
//! lines it shows have been printed. In an expected output, a line `...` stands for any
//! number of lines and `[..]` for any text within a line. As root, it all runs in a network
//! namespace of its own, so the page's fixed ports (8080, 9080, 9990, 9991) are its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::repo_root;

#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

#[derive(Debug)]
struct Block {
    start: bool,
    line: usize,
    steps: Vec<Step>,
}

/// The marked blocks of a page, in order.
fn blocks(page: &str) -> Vec<Block> {
    let lines: Vec<&str> = page.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = match lines[i].trim() {
            "<!-- test -->" => false,
            "<!-- test: start -->" => true,
            _ => {
                i += 1;
                continue;
            }
        };
        let line = i + 1;
        i += 1;
        assert!(
            lines.get(i).is_some_and(|l| l.starts_with("```")),
            "line {line}: a test marker must stand right above a fenced block"
        );
        i += 1;
        let mut steps: Vec<Step> = Vec::new();
        while i < lines.len() && !lines[i].starts_with("```") {
            match lines[i].strip_prefix("$ ") {
                Some(command) => steps.push(Step {
                    command: command.to_owned(),
                    expected: Vec::new(),
                }),
                None => steps
                    .last_mut()
                    .unwrap_or_else(|| panic!("line {}: output before any command", i + 1))
                    .expected
                    .push(lines[i].trim_end().to_owned()),
            }
            i += 1;
        }
        found.push(Block { start, line, steps });
    }
    found
}

/// Whether `line` is `pattern`, where `[..]` in the pattern stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `actual` is `expected`, line by line, a `...` line standing for any lines.
fn output_matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && output_matches(rest, more)),
    }
}

/// Runs commands in the page's own network namespace (as root), or here.
struct Place {
    namespace: Option<String>,
}

impl Place {
    fn new() -> Self {
        if !tests::is_root() {
            eprintln!("not root: the page's commands run in this network namespace, on its ports");
            return Self { namespace: None };
        }
        tests::require_root_for_netns();
        let name = format!("gm-docs-{}", std::process::id());
        for args in [
            vec!["netns", "add", &name],
            vec!["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("ip runs");
            assert!(status.success(), "ip {args:?} failed");
        }
        Self {
            namespace: Some(name),
        }
    }

    fn command(&self, line: &str) -> Command {
        let mut command = match &self.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "bash", "-c", line]);
                c
            }
            None => {
                let mut c = Command::new("bash");
                c.args(["-c", line]);
                c
            }
        };
        command.current_dir(repo_root()).env("CI", "true");
        // As from a user's shell: without what `cargo test` sets for this test. Build
        // scripts (ring's) watch CARGO_MANIFEST_DIR, CARGO_PKG_NAME and the like, so
        // `scripts/up.sh`'s `cargo build` would otherwise build everything again.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo = ["CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_"]
                .iter()
                .any(|p| name.starts_with(p))
                || [
                    "CARGO",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "CARGO_MAKEFLAGS",
                    "OUT_DIR",
                    "RUST_RECURSION_COUNT",
                ]
                .contains(&name.as_ref());
            if set_by_cargo {
                command.env_remove(name.as_ref());
            }
        }
        command
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(ns) = &self.namespace {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// The background command, stopped as Ctrl-C stops it when dropped.
struct Running {
    child: std::process::Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Starts `step` and reads what it prints until its expected lines (other than `...`)
/// have all been seen, in order.
fn start(place: &Place, step: &Step) -> Running {
    use std::os::unix::process::CommandExt as _;
    let mut command = place.command(&format!("exec {} 2>&1", step.command));
    let mut child = command
        .process_group(0)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("the command starts");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wanted: Vec<&String> = step.expected.iter().filter(|l| *l != "...").collect();
    let mut next = 0;
    let mut seen = Vec::new();
    // scripts/test.sh has built the release binaries: setup and start take seconds.
    let until = Instant::now() + Duration::from_secs(300);
    while next < wanted.len() {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line_matches(wanted[next], line.trim_end()) {
                    next += 1;
                }
                seen.push(line);
            }
            Err(_) => panic!(
                "`{}` did not print {:?} (it printed:\n{})",
                step.command,
                wanted[next],
                seen.join("\n")
            ),
        }
    }
    // Keep draining what it prints, so that it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    running
}

fn run(place: &Place, step: &Step) {
    let out = place
        .command(&format!("{} 2>&1", step.command))
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let actual: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
    assert!(
        output_matches(&step.expected, &actual),
        "`{}` printed:\n{}\n\nwhere the page shows:\n{}",
        step.command,
        text,
        step.expected.join("\n")
    );
}

#[test]
fn the_getting_started_page_runs_as_written() {
    let page = std::fs::read_to_string(repo_root().join("docs/src/getting-started.md"))
        .expect("docs/src/getting-started.md");
    let blocks = blocks(&page);
    assert!(
        blocks.iter().filter(|b| b.start).count() == 1 && blocks.len() >= 5,
        "the page has one start block and its steps: {blocks:?}"
    );
    let place = Place::new();
    let mut running = Vec::new();
    let mut ran = 0;
    for block in &blocks {
        eprintln!("getting-started.md line {}", block.line);
        for step in &block.steps {
            if block.start {
                running.push(start(&place, step));
            } else {
                run(&place, step);
            }
            ran += 1;
        }
    }
    assert!(ran >= 8, "only {ran} commands ran");
    drop(running);
}

#[test]
fn the_matching_is_strict_where_the_page_is() {
    let lines = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
    assert!(line_matches("in [..] ms: 500 ok", "in 223 ms: 500 ok"));
    assert!(!line_matches("in [..] ms: 500 ok", "in 223 ms: 499 ok"));
    assert!(!line_matches("a[..]b", "ab-"));
    assert!(output_matches(&lines("a\n...\nc"), &lines("a\nb\nb\nc")));
    assert!(output_matches(&lines("a\n...\nc"), &lines("a\nc")));
    assert!(!output_matches(&lines("a\nc"), &lines("a\nb\nc")));
    assert!(!output_matches(&lines("a"), &lines("a\nmore")));
    let page = "x\n<!-- test -->\n```console\n$ echo hi\nhi\n$ true\n```\n";
    let found = blocks(page);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].steps[0].expected, vec!["hi"]);
    assert!(found[0].steps[1].expected.is_empty());
}
