//! `gophermesh rollout`: start, show, pause, resume and abort rollouts through the control
//! API (`/v1/rollouts`).

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::progress::escape;
use serde_json::{Value, json};

use gophermesh::api::rollouts::{describe, steps_text};

use super::control::{call, refused, request, url};
use crate::cli::{ControlArgs, RolloutActArgs, RolloutStartArgs, RolloutWhat};

pub(crate) async fn run(what: RolloutWhat) -> anyhow::Result<ExitCode> {
    match what {
        RolloutWhat::Start(args) => start(&args).await,
        RolloutWhat::Status {
            route,
            mesh,
            events,
            json,
            control,
        } => status(&control, route.as_deref(), mesh.as_deref(), events, json).await,
        RolloutWhat::Pause(args) => act(&args, "pause").await,
        RolloutWhat::Resume(args) => act(&args, "resume").await,
        RolloutWhat::Abort(args) => act(&args, "abort").await,
    }
}

async fn start(args: &RolloutStartArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "route": args.route, "to": args.to });
    let fields = [
        ("mesh", args.mesh.as_ref().map(|v| json!(v))),
        ("router", args.router.as_ref().map(|v| json!(v))),
        ("steps", args.steps.as_ref().map(|v| json!(v))),
        ("interval", args.interval.as_ref().map(|v| json!(v))),
        ("minSuccess", args.min_success.map(|v| json!(v))),
        ("maxP99", args.max_p99.as_ref().map(|v| json!(v))),
        ("minRequests", args.min_requests.map(|v| json!(v))),
        ("maxFailedChecks", args.max_failed_checks.map(|v| json!(v))),
        ("header", args.header.as_ref().map(|v| json!(v))),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    let control = &args.control;
    let (status, answer) = call(
        control,
        request(
            control,
            reqwest::Method::POST,
            url(control, "/v1/rollouts")?,
        )?
        .json(&body),
    )
    .await?;
    if status != 201 {
        return Ok(refused(&answer));
    }
    let r = &answer["rollout"];
    let interval = std::time::Duration::from_millis(r["plan"]["intervalMs"].as_u64().unwrap_or(0));
    let now = match r["ab"].as_object() {
        Some(ab) => format!(
            "A/B stage first: requests with {}: {} go to it by route {}, the weights stay",
            escape(ab["header"].as_str().unwrap_or_default()),
            escape(ab["value"].as_str().unwrap_or_default()),
            escape(ab["route"].as_str().unwrap_or_default()),
        ),
        None => format!("{}% now", r["weight"]),
    };
    println!(
        "rollout of route {} to {} started: {now} (steps {}); checked every {}, success >= {}%, p99 <= {} ms, at least {} requests; {} failed checks roll it back",
        escape(r["route"].as_str().unwrap_or_default()),
        escape(r["target"].as_str().unwrap_or_default()),
        steps_text(r),
        humantime::format_duration(interval),
        r["plan"]["minSuccessPct"],
        r["plan"]["maxP99Ms"],
        r["plan"]["minRequests"],
        r["plan"]["maxFailedChecks"],
    );
    println!(
        "Follow it: gophermesh rollout status {}",
        escape(&args.route)
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(
    control: &ControlArgs,
    route: Option<&str>,
    mesh: Option<&str>,
    events: usize,
    raw: bool,
) -> anyhow::Result<ExitCode> {
    let mut at = url(control, "/v1/rollouts")?;
    if let Some(m) = mesh {
        at.query_pairs_mut().append_pair("mesh", m);
    }
    let (code, answer) = call(control, request(control, reqwest::Method::GET, at)?).await?;
    if code != 200 {
        return Ok(refused(&answer));
    }
    let all: Vec<&Value> = answer["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| route.is_none_or(|name| r["route"] == name))
        .collect();
    if raw {
        println!("{}", serde_json::to_string_pretty(&all).context("JSON")?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!(
            "no rollout{}",
            route
                .map(|r| format!(" of route {}", escape(r)))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for r in all {
        print!("{}", describe(r, events));
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(args: &RolloutActArgs, action: &str) -> anyhow::Result<ExitCode> {
    let control = &args.control;
    let mut at = url(control, "/v1/rollouts")?;
    at.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--control-url cannot take a path"))?
        .extend([args.route.as_str(), action]);
    if let Some(m) = &args.mesh {
        at.query_pairs_mut().append_pair("mesh", m);
    }
    if let Some(r) = &args.router {
        at.query_pairs_mut().append_pair("router", r);
    }
    let (code, answer) = call(control, request(control, reqwest::Method::POST, at)?).await?;
    if code != 200 {
        return Ok(refused(&answer));
    }
    print!("{}", describe(&answer["rollout"], 1));
    Ok(ExitCode::SUCCESS)
}
