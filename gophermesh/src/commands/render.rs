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
        let mut out = meshmodel::render::render(&origin, &text, |name| std::env::var(name).ok())?;
        let mut doc = serde_json::from_str::<serde_json::Value>(&out)
            .with_context(|| format!("{origin}: the rendered text is not valid JSON (a value put in a placeholder may need escaping)"))?;
        let mut changed = false;
        if let Some(endpoint) = &args.xds_endpoint {
            changed |= point_envoy_at(&mut doc, endpoint);
        }
        if let Some(image) = &args.sidecar_image {
            if let Some(envoy) = envoy_container(&mut doc) {
                envoy["image"] = serde_json::Value::from(image.as_str());
                changed = true;
            }
        }
        if changed {
            out = serde_json::to_string_pretty(&doc)? + "\n";
        }
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

/// The Envoy container of task definition `doc`: the one its `proxyConfiguration` names,
/// or, in a virtual gateway's task, which has none, the container that names its resource.
fn envoy_container(doc: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
    use serde_json::Value;
    let envoy = doc["proxyConfiguration"]["containerName"]
        .as_str()
        .map(ToOwned::to_owned);
    let names_resource = |c: &Value| {
        c["environment"].as_array().is_some_and(|env| {
            env.iter().any(|v| {
                v["name"] == "APPMESH_RESOURCE_ARN" || v["name"] == "APPMESH_VIRTUAL_NODE_NAME"
            })
        })
    };
    doc["containerDefinitions"].as_array_mut().and_then(|cs| {
        cs.iter_mut().find(|c| match &envoy {
            Some(name) => c["name"] == name.as_str(),
            None => names_resource(c),
        })
    })
}

/// Sets `APPMESH_XDS_ENDPOINT` on the Envoy container of task definition `doc`
/// ([`envoy_container`]); whether it has one.
fn point_envoy_at(doc: &mut serde_json::Value, endpoint: &str) -> bool {
    use serde_json::{Value, json};
    let Some(container) = envoy_container(doc) else {
        return false;
    };
    let variable = json!({"name": "APPMESH_XDS_ENDPOINT", "value": endpoint});
    match container
        .get_mut("environment")
        .and_then(Value::as_array_mut)
    {
        Some(env) => match env.iter_mut().find(|v| v["name"] == "APPMESH_XDS_ENDPOINT") {
            Some(existing) => *existing = variable,
            None => env.push(variable),
        },
        None => container["environment"] = json!([variable]),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_envoy_container_gets_the_endpoint_once() {
        let mut doc = serde_json::json!({
            "proxyConfiguration": {"containerName": "envoy"},
            "containerDefinitions": [
                {"name": "app", "environment": [{"name": "A", "value": "1"}]},
                {"name": "envoy", "environment": [
                    {"name": "APPMESH_RESOURCE_ARN", "value": "mesh/m/virtualNode/n"},
                    {"name": "APPMESH_XDS_ENDPOINT", "value": "old:1"}
                ]}
            ]
        });
        assert!(point_envoy_at(&mut doc, "xds.gophers.local:15010"));
        assert!(point_envoy_at(&mut doc, "xds.gophers.local:15010"));
        assert_eq!(
            doc["containerDefinitions"][1]["environment"],
            serde_json::json!([
                {"name": "APPMESH_RESOURCE_ARN", "value": "mesh/m/virtualNode/n"},
                {"name": "APPMESH_XDS_ENDPOINT", "value": "xds.gophers.local:15010"}
            ])
        );
        assert_eq!(
            doc["containerDefinitions"][0]["environment"],
            serde_json::json!([{"name": "A", "value": "1"}])
        );
        let mut plain = serde_json::json!({"family": "control-plane", "containerDefinitions": []});
        assert!(!point_envoy_at(&mut plain, "x:1"));
    }
}
