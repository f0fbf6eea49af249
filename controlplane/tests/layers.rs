//! The control plane's layers import only downward: `state` imports neither the
//! translation nor the xDS serving, and the translation does not import the xDS serving.
//! (A cycle between them would compile; this test is what keeps them apart.)

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The lines of the files of layer `layer` (its root file and its folder) that name one
/// of `above`, as `file:line: text`.
fn reaching_up(layer: &str, above: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = sources(&src.join(layer));
    files.push(src.join(format!("{layer}.rs")));
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if above.iter().any(|a| code.contains(a)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_state_imports_neither_the_translation_nor_the_xds_serving() {
    let found = reaching_up(
        "state",
        &[
            "crate::translate",
            "crate::secrets",
            "crate::xds",
            "crate::Cache",
        ],
    );
    assert!(found.is_empty(), "state reaches up:\n{}", found.join("\n"));
}

#[test]
fn the_translation_does_not_import_the_xds_serving() {
    let found = reaching_up(
        "translate",
        &["crate::secrets", "crate::xds", "crate::Cache"],
    );
    assert!(
        found.is_empty(),
        "translate reaches up:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_secrets_do_not_import_the_xds_serving() {
    let found = reaching_up("secrets", &["crate::xds", "crate::Cache"]);
    assert!(found.is_empty(), "secrets reach up:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_reach_upward() {
    // The xDS serving does import the translation; the check must see it.
    assert!(!reaching_up("xds", &["crate::translate"]).is_empty());
}
