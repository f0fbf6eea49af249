//! `gophermesh reference` (hidden): the command-line reference of the book
//! (`docs/src/reference/cli.md`), written from the clap definitions themselves, so that the
//! book cannot say a flag that the binary does not have (the `docs` test compares the two).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};

/// What the page says above the commands.
const HEAD: &str = "# Command-line reference

<!-- Written by `gophermesh reference` from the binary's own flag definitions. Do not edit:
run `scripts/docs.sh --write` after changing a flag (the `docs` test fails until then). -->

Every subcommand of `gophermesh` and every flag, with the environment variable it is also
read from (where it has one) and its default. `gophermesh COMMAND --help` prints the same.
After `scripts/up.sh` the binary is `target/release/gophermesh`; put `target/release` on
your `PATH` (`export PATH=\"$PWD/target/release:$PATH\"`) to type `gophermesh` alone.
";

/// Prints the reference to stdout.
pub(crate) fn run(command: &Command) -> anyhow::Result<ExitCode> {
    print!("{}", markdown(command));
    Ok(ExitCode::SUCCESS)
}

/// The whole page: one section per subcommand, depth first, in definition order.
pub(crate) fn markdown(root: &Command) -> String {
    let mut out = String::from(HEAD);
    let mut index = String::from("\n| command | what it does |\n|---|---|\n");
    let mut sections = String::new();
    for sub in visible(root) {
        walk(sub, root.get_name(), &mut index, &mut sections);
    }
    out.push_str(&index);
    out.push_str(&sections);
    out
}

fn visible(command: &Command) -> impl Iterator<Item = &Command> {
    command.get_subcommands().filter(|c| !c.is_hide_set())
}

fn walk(command: &Command, parent: &str, index: &mut String, out: &mut String) {
    let path = format!("{parent} {}", command.get_name());
    let about = command
        .get_long_about()
        .or_else(|| command.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let summary = command
        .get_about()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let _ = writeln!(
        index,
        "| [`{path}`](#{}) | {} |",
        anchor(&path),
        cell(&one_paragraph(&summary))
    );
    let _ = write!(out, "\n## `{path}`\n\n{}\n", sentence(&about));
    let mut usage = command.clone().bin_name(&path);
    let usage = usage.render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    let _ = write!(out, "\n```text\n{usage}\n```\n");
    let args: Vec<&Arg> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if !args.is_empty() {
        out.push_str("\n| argument | environment | default | meaning |\n|---|---|---|---|\n");
        for arg in args {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(&name(arg)),
                arg.get_env()
                    .map(|e| format!("`{}`", e.to_string_lossy()))
                    .unwrap_or_default(),
                default(arg),
                cell(&help(arg)),
            );
        }
    }
    let subs: Vec<&Command> = visible(command).collect();
    if !subs.is_empty() {
        let names: Vec<String> = subs
            .iter()
            .map(|s| {
                format!(
                    "[`{path} {}`](#{})",
                    s.get_name(),
                    anchor(&format!("{path} {}", s.get_name()))
                )
            })
            .collect();
        let _ = writeln!(out, "\nSubcommands: {}.", names.join(", "));
    }
    for sub in subs {
        walk(sub, &path, index, out);
    }
}

/// `--flag VALUE`, `-f, --file FILE` or `<ROUTE>` for a positional.
fn name(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    if arg.is_positional() {
        let dots = if matches!(arg.get_action(), ArgAction::Append) {
            "..."
        } else {
            ""
        };
        return format!("`<{value}>{dots}`");
    }
    let takes = arg.get_action().takes_values();
    let long = arg.get_long().map(|l| format!("--{l}"));
    let short = arg.get_short().map(|s| format!("-{s}"));
    let flag = [short, long]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    if takes {
        format!("`{flag} {value}`")
    } else {
        format!("`{flag}`")
    }
}

fn default(arg: &Arg) -> String {
    if !arg.get_action().takes_values() {
        return String::new();
    }
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if values.is_empty() {
        String::new()
    } else {
        format!("`{}`", values.join(","))
    }
}

fn help(arg: &Arg) -> String {
    let mut text = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|s| sentence(&s.to_string()))
        .unwrap_or_default();
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| format!("`{}`", p.get_name()))
        .collect();
    if !choices.is_empty() && arg.get_action().takes_values() {
        let _ = write!(text, " One of: {}.", choices.join(", "));
    }
    if arg.is_required_set() {
        text.push_str(" Required.");
    }
    text
}

/// Help text is wrapped at 90 columns in the source; a table cell is one line.
fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One paragraph that ends as a sentence does (clap drops a summary's last full stop).
fn sentence(text: &str) -> String {
    let mut text = one_paragraph(text);
    if !text.is_empty() && !text.ends_with(['.', '`']) {
        text.push('.');
    }
    text
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// mdBook's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_visible_subcommand_and_flag_is_in_the_reference() {
        let root = crate::cli::Cli::command();
        let page = markdown(&root);
        assert!(page.contains("\n## `gophermesh up`\n"), "{page}");
        assert!(page.contains("\n## `gophermesh route set`\n"));
        assert!(page.contains("| `--allow-host NAME` | `GOPHERMESH_ALLOW_HOST` |"));
        assert!(page.contains("[`gophermesh up`](#gophermesh-up)"));
        for sub in visible(&root) {
            assert!(page.contains(&format!("## `gophermesh {}`", sub.get_name())));
        }
        assert!(
            !page.contains("## `gophermesh reference`"),
            "hidden commands stay out"
        );
    }
}
