//! `gophermesh apply -f FILE...`: the resources of App Mesh JSON, CloudFormation templates
//! or Kubernetes manifests, applied to the running mesh as one change (or a dry run).

use std::process::ExitCode;

use gophermesh::progress::escape;
use meshmodel::import::{Format, Imported};
use serde_json::{Value, json};

use super::control::{call, refused, request, url};
use crate::cli::ApplyArgs;

pub(crate) async fn run(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let options = args.read.options(&args.imports);
    let read = match meshmodel::import::read_paths(&args.files, &options) {
        Ok(read) => read,
        Err(problems) => return Ok(say_problems("not applied; nothing was changed:", &problems)),
    };
    if !args.quiet {
        say_not_applied(&read);
    }
    let url = url(&args.control, "/v1/resources")?;
    // One App Mesh JSON file, as before templates: the single-resource call.
    if let [one] = read.as_slice() {
        if one.format == Format::AppMeshJson && one.resources.len() == 1 && !args.dry_run {
            let (origin, resource) = &one.resources[0];
            let body = json!({"origin": origin, "resource": resource.to_json()});
            let answer = match post(args, url, &body).await? {
                Ok(answer) => answer,
                Err(exit) => return Ok(exit),
            };
            println!(
                "applied {} (mesh version {})",
                escape(origin),
                answer["version"]
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let resources: Vec<Value> = read
        .iter()
        .flat_map(|i| &i.resources)
        .map(|(origin, r)| json!({"origin": origin, "resource": r.to_json()}))
        .collect();
    if resources.is_empty() {
        eprintln!("nothing to apply: no App Mesh resource in what was given");
        return Ok(ExitCode::FAILURE);
    }
    let body = json!({"resources": resources, "dryRun": args.dry_run});
    let answer = match post(args, url, &body).await? {
        Ok(answer) => answer,
        Err(exit) => return Ok(exit),
    };
    let count = |k: &str| answer[k].as_array().map_or(0, Vec::len);
    if args.dry_run {
        print_dry_run(&answer);
        println!(
            "dry run: {} to create, {} to update, {} unchanged; nothing was changed",
            count("created"),
            count("updated"),
            count("unchanged")
        );
    } else {
        println!(
            "applied {} resources from {}: {} created, {} updated, {} unchanged (mesh version {})",
            resources.len(),
            read.iter()
                .map(|i| format!("{} ({})", i.origin, i.format))
                .collect::<Vec<_>>()
                .join(", "),
            count("created"),
            count("updated"),
            count("unchanged"),
            answer["version"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// POSTs `body` to `url`: the answer, or (refused) the exit code after saying why.
async fn post(
    args: &ApplyArgs,
    url: reqwest::Url,
    body: &Value,
) -> anyhow::Result<Result<Value, ExitCode>> {
    let (status, answer) = call(
        &args.control,
        request(&args.control, reqwest::Method::POST, url)?.json(body),
    )
    .await?;
    Ok(match status {
        200 => Ok(answer),
        _ => Err(refused(&answer)),
    })
}

/// Says `head`, then each of `problems` on a line of its own; exit 1.
pub(super) fn say_problems(head: &str, problems: &meshmodel::Problems) -> ExitCode {
    eprintln!("{head}");
    for p in &problems.0 {
        eprintln!("  {}", escape(&p.to_string()));
    }
    ExitCode::FAILURE
}

/// One line per thing given that is not applied (other resource types and kinds).
pub(super) fn say_not_applied(read: &[Imported]) {
    for imported in read {
        for line in &imported.not_applied {
            eprintln!(
                "not applied: {}: {}",
                escape(&imported.origin),
                escape(line)
            );
        }
    }
}

/// What a dry run would create and update, as App Mesh JSON, and what it leaves alone.
fn print_dry_run(answer: &Value) {
    for (what, key) in [("create", "created"), ("update", "updated")] {
        for item in answer[key].as_array().into_iter().flatten() {
            println!(
                "# would {what}: {}",
                escape(item["origin"].as_str().unwrap_or(""))
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&item["resource"]).unwrap_or_default()
            );
        }
    }
    for item in answer["unchanged"].as_array().into_iter().flatten() {
        println!("# unchanged: {}", escape(item.as_str().unwrap_or("")));
    }
}
