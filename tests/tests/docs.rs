//! The book (`docs/`) and the README cannot drift from the code: the pages made from the
//! code are what the code makes now, every link resolves, the book builds without a
//! warning, and the README stays short. `scripts/docs.sh --write` rewrites the made pages
//! (it runs these tests with `GOPHERMESH_DOCS_WRITE=1`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{bin, repo_root, tool};

fn book() -> PathBuf {
    repo_root().join("docs/src")
}

/// Compares a page (or the part of it between `<!-- NAME -->` and `<!-- /NAME -->`) with
/// what the code makes; with `GOPHERMESH_DOCS_WRITE=1`, writes it instead.
fn check_made(file: &Path, marker: Option<&str>, made: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (start, end) = match marker {
        None => (0, text.len()),
        Some(name) => {
            let open = format!("<!-- {name} -->\n");
            let close = format!("<!-- /{name} -->");
            let start = text.find(&open).map(|i| i + open.len());
            let end = text.find(&close);
            match (start, end) {
                (Some(s), Some(e)) if s <= e => (s, e),
                _ => panic!("{}: no `{open}` ... `{close}` block", file.display()),
            }
        }
    };
    if text[start..end] == *made {
        return;
    }
    if std::env::var_os("GOPHERMESH_DOCS_WRITE").is_some() {
        let new = format!("{}{made}{}", &text[..start], &text[end..]);
        std::fs::write(file, new).expect("write the page");
        return;
    }
    let old = &text[start..end];
    let line = old
        .lines()
        .zip(made.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| old.lines().count().min(made.lines().count()));
    panic!(
        "{} is not what the code makes now (first difference at line {} of the block:\n  committed: {:?}\n  made:      {:?}).\n\
         Run scripts/docs.sh --write and commit the result.",
        file.display(),
        line + 1,
        old.lines().nth(line).unwrap_or("<end>"),
        made.lines().nth(line).unwrap_or("<end>"),
    );
}

fn output(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_command_line_reference_is_what_the_binary_says() {
    let made = output(Command::new(bin("gophermesh")).arg("reference"));
    check_made(&book().join("reference/cli.md"), None, &made);
}

#[test]
fn the_export_table_is_what_the_exports_decide() {
    let made = output(
        Command::new(bin("gophermesh"))
            .args(["export", "service-connect", "--features"])
            .current_dir(repo_root()),
    );
    check_made(
        &book().join("reference/exports.md"),
        Some("features"),
        &made,
    );
}

/// Every operation of App Mesh's API model (botocore's, as the AWS CLI has it), and the
/// operation gophermesh's API serves at the same method and path.
#[test]
fn the_api_coverage_is_what_the_api_serves() {
    let script = "import botocore.session, json\n\
        m = botocore.session.get_session().get_service_model('appmesh')\n\
        print(json.dumps([[n, m.operation_model(n).http['method'], m.operation_model(n).http['requestUri']] for n in m.operation_names]))";
    let model: Vec<(String, String, String)> =
        serde_json::from_str(&output(Command::new(tool("python")).args(["-c", script])))
            .expect("the model's operations");
    assert!(model.len() >= 38, "App Mesh has 38 operations: {model:?}");
    let mut table = String::from("| operation | method and path | gophermesh |\n|---|---|---|\n");
    let mut served = 0;
    for (name, method, uri) in &model {
        // Fill the path's parameters with names, as a call would.
        let mut path = String::new();
        let mut rest = uri.split('?').next().unwrap_or_default();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            path.push_str(&rest[..open]);
            path.push_str("name");
            rest = &rest[close..];
        }
        path.push_str(rest);
        let method_ = axum::http::Method::from_bytes(method.as_bytes()).expect("a method");
        let answer = gophermesh::api::appmesh::operation_name(&method_, &path);
        let says = if answer.as_deref() == Some(name.as_str()) {
            served += 1;
            "served".to_owned()
        } else {
            match answer {
                Some(other) => format!("served as {other}, not as this operation"),
                None => "not served".to_owned(),
            }
        };
        table.push_str(&format!("| `{name}` | `{method} {uri}` | {says} |\n"));
    }
    table.push_str(&format!(
        "\n{served} of the {} operations of App Mesh's API (2019-01-25) are served.\n",
        model.len()
    ));
    check_made(&book().join("reference/api.md"), Some("coverage"), &table);
}

/// mdBook's anchor of a heading: lower case, letters, digits, `-` and `_` kept, spaces to
/// `-`, the rest dropped; a repeated anchor gets `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let base: String = text
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut anchor = base.clone();
        let mut n = 1;
        while seen.contains(&anchor) {
            anchor = format!("{base}-{n}");
            n += 1;
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of `[text](target)` links and `<img src="...">` outside code.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        // Inline code spans can hold `](`; drop them first.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or(after.len());
            found.push(
                after[..end]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
            rest = &after[end..];
        }
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("src=\"") {
            let after = &rest[i + 5..];
            let end = after.find('"').unwrap_or(after.len());
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

fn markdown_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            markdown_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "md") {
            into.push(path);
        }
    }
}

#[test]
fn every_link_of_the_book_and_the_readme_resolves() {
    let mut files = vec![repo_root().join("README.md")];
    markdown_files(&book(), &mut files);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a page");
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") || link.is_empty() {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a parent").join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", file.display()));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let there = std::fs::read_to_string(&target).expect("the target page");
                if !anchors(&there).contains(anchor) {
                    broken.push(format!(
                        "{}: {link}: no heading makes #{anchor}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links were found: is the parser right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let summary = std::fs::read_to_string(book().join("SUMMARY.md")).expect("SUMMARY.md");
    let listed: BTreeSet<PathBuf> = links(&summary).iter().map(|l| book().join(l)).collect();
    let mut files = Vec::new();
    markdown_files(&book(), &mut files);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !f.ends_with("SUMMARY.md") && !listed.contains(*f))
        .filter(|f| !f.starts_with(book().join("bench")))
        .collect();
    assert!(missing.is_empty(), "pages no chapter leads to: {missing:?}");
}

#[test]
fn the_book_builds_without_a_warning() {
    let mdbook = [repo_root().join(".tools/bin/mdbook")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            assert!(
                Command::new("mdbook").arg("--version").output().is_ok(),
                "mdbook is not installed: scripts/setup.sh --tests installs it into .tools \
                 (cargo install mdbook --locked --version 0.4.52 --root .tools)"
            );
            PathBuf::from("mdbook")
        });
    let out_dir = tests::TempDir::new("book");
    let out = Command::new(mdbook)
        .args(["build", "docs", "--dest-dir"])
        .arg(&*out_dir)
        .current_dir(repo_root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("mdbook runs");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mdbook build failed:\n{said}");
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        warnings.is_empty(),
        "the book builds with warnings:\n{said}"
    );
    for page in ["index.html", "getting-started.html", "reference/cli.html"] {
        assert!(out_dir.join(page).is_file(), "{page} was not built");
    }
}

#[test]
fn the_readme_is_short_and_leads_to_the_book() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; the book is where the rest goes"
    );
    for page in [
        "docs/src/getting-started.md",
        "docs/src/guides/ecs.md",
        "docs/src/guides/eks.md",
        "docs/src/guides/cloudformation.md",
        "docs/src/guides/leaving.md",
        "docs/src/reference/cli.md",
    ] {
        assert!(
            readme.contains(&format!("]({page}")),
            "the README does not link {page}"
        );
    }
}

/// The book's benchmark tables and the README's figures are those the bench wrote from its
/// own bench.json (kept in docs/src/bench/ from the latest full run).
#[test]
fn the_figures_shown_are_those_the_bench_wrote() {
    let dir = book().join("bench");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("bench.json")).expect("docs/src/bench/bench.json"),
    )
    .expect("bench.json is JSON");
    assert!(
        json.pointer("/scenarios/mesh/rps").is_some() && json["fleet"].as_array().is_some(),
        "bench.json is a full run's"
    );
    check_made(
        &dir.join("bench.md"),
        None,
        &gophermesh::bench::markdown::tables(&json),
    );
    let summary = gophermesh::bench::markdown::summary(&json);
    check_made(&dir.join("summary.md"), None, &summary);
    check_made(&repo_root().join("README.md"), Some("bench"), &summary);
}
