//! `gophermesh render taskdefs`: placeholders filled from the environment.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::RenderArgs;

/// Renders every task definition into `--out`; a missing variable stops with its name
/// before anything is written.
pub(crate) fn run(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let mut files: Vec<_> = std::fs::read_dir(&args.taskdefs_dir)
        .with_context(|| format!("cannot read {}", args.taskdefs_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no *.json task definitions here",
        args.taskdefs_dir.display()
    );
    let mut rendered = Vec::new();
    for file in &files {
        let origin = file.display().to_string();
        let text = meshmodel::input::read_text(file, meshmodel::input::MAX_FILE)
            .with_context(|| format!("cannot read {origin}"))?;
        let out = meshmodel::render::render(&origin, &text, |name| std::env::var(name).ok())?;
        serde_json::from_str::<serde_json::Value>(&out)
            .with_context(|| format!("{origin}: the rendered text is not valid JSON (a value put in a placeholder may need escaping)"))?;
        rendered.push((file.file_name().map(ToOwned::to_owned), out));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, text) in rendered {
        let Some(name) = name else { continue };
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
