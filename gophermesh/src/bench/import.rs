//! A large CloudFormation template applied to a running control plane: a mesh and `groups`
//! times a node, a router, a route and a service (1,001 resources for 250), written as
//! users write them (`!GetAtt`, `!Sub`, `!Ref` of parameters, a mapping). Timed twice: the
//! template read and evaluated alone, and `gophermesh apply -f` end to end against `serve`
//! (the CLI starting, evaluating, sending; the control plane checking the mesh as a whole
//! and storing it as one change).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::config::ServeConfig;

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ImportFigure {
    pub resources: usize,
    pub template_kib: f64,
    /// Read and evaluated in this process (best of three).
    pub evaluate_ms: f64,
    /// `gophermesh apply -f` from exec to exit, against `serve` (best of three; the first
    /// creates everything, the others find it unchanged).
    pub apply_ms: f64,
    /// The first apply, which created every resource.
    pub first_apply_ms: f64,
}

/// The template: a mesh and `groups` nodes, routers, routes and services.
pub fn template(groups: usize) -> String {
    let mut t = String::from(
        "AWSTemplateFormatVersion: \"2010-09-09\"\nParameters:\n  Port: {Type: Number, Default: 8080}\n  Domain: {Type: String, Default: bench.local}\nMappings:\n  Retries: {all: {Max: 2}}\nResources:\n  Mesh:\n    Type: AWS::AppMesh::Mesh\n    Properties:\n      MeshName: bench\n      Spec: {EgressFilter: {Type: DROP_ALL}}\n",
    );
    for i in 0..groups {
        let _ = write!(
            t,
            "  Node{i}:\n    Type: AWS::AppMesh::VirtualNode\n    Properties:\n      MeshName: !GetAtt Mesh.MeshName\n      VirtualNodeName: !Sub \"node-{i}\"\n      Spec:\n        Listeners: [{{PortMapping: {{Port: !Ref Port, Protocol: http}}}}]\n        ServiceDiscovery: {{DNS: {{Hostname: !Sub \"node-{i}.${{Domain}}\"}}}}\n        Backends: [{{VirtualService: {{VirtualServiceName: !Sub \"service-{next}.${{Domain}}\"}}}}]\n  Router{i}:\n    Type: AWS::AppMesh::VirtualRouter\n    Properties:\n      MeshName: !GetAtt Mesh.MeshName\n      VirtualRouterName: router-{i}\n      Spec: {{Listeners: [{{PortMapping: {{Port: !Ref Port, Protocol: http}}}}]}}\n  Route{i}:\n    Type: AWS::AppMesh::Route\n    Properties:\n      MeshName: !GetAtt Mesh.MeshName\n      VirtualRouterName: !GetAtt Router{i}.VirtualRouterName\n      RouteName: route-{i}\n      Spec:\n        HttpRoute:\n          Match: {{Prefix: /}}\n          Action: {{WeightedTargets: [{{VirtualNode: !GetAtt Node{i}.VirtualNodeName, Weight: 100}}]}}\n          RetryPolicy:\n            MaxRetries: !FindInMap [Retries, all, Max]\n            PerRetryTimeout: {{Unit: ms, Value: 2000}}\n            HttpRetryEvents: [server-error]\n  Service{i}:\n    Type: AWS::AppMesh::VirtualService\n    Properties:\n      MeshName: !GetAtt Mesh.MeshName\n      VirtualServiceName: !Sub \"service-{i}.${{Domain}}\"\n      Spec: {{Provider: {{VirtualRouter: {{VirtualRouterName: !GetAtt Router{i}.VirtualRouterName}}}}}}\n",
            next = (i + 1) % groups,
        );
    }
    t
}

/// Writes the template of `groups` under `work`, starts `serve` in this process, and
/// times evaluating it and applying it with `me apply -f`.
pub async fn measure(work: &Path, me: &Path, groups: usize) -> anyhow::Result<ImportFigure> {
    let text = template(groups);
    let file = work.join("bench-template.yaml");
    std::fs::write(&file, &text)?;
    let options = meshmodel::import::Options::default();
    let mut evaluate_ms = f64::MAX;
    let mut resources = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let read = meshmodel::import::read_text("bench-template.yaml", &text, &options)
            .map_err(|p| anyhow::anyhow!("{p}"))?;
        evaluate_ms = evaluate_ms.min(started.elapsed().as_secs_f64() * 1e3);
        resources = read.resources.len();
    }
    let serving = crate::plane::serve::start(ServeConfig::on_loopback(
        work.to_path_buf(),
        true,
        work.join("import-state"),
    ))
    .await?;
    let control = serving.apis.control.clone();
    let state_dir = work.join("import-state");
    let (tell, told) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(serving.run_until(async {
        let _ = told.await;
    }));
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = tokio::process::Command::new(me)
            .arg("apply")
            .arg("-f")
            .arg(&file)
            .arg("--quiet")
            .arg("--control-url")
            .arg(&control)
            .arg("--state-dir")
            .arg(&state_dir)
            .output()
            .await
            .context("cannot run gophermesh apply")?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!(
                "apply of the bench template failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = tell.send(());
    let _ = running.await;
    Ok(ImportFigure {
        resources,
        template_kib: text.len() as f64 / 1024.0,
        evaluate_ms,
        first_apply_ms: times[0],
        apply_ms: times.iter().copied().fold(f64::MAX, f64::min),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's template is a real one: it evaluates to a mesh and its groups, and
    /// that mesh checks as a whole.
    #[test]
    fn the_bench_template_makes_a_whole_mesh() {
        let read = meshmodel::import::read_text(
            "bench.yaml",
            &template(5),
            &meshmodel::import::Options::default(),
        )
        .expect("evaluates");
        assert_eq!(read.resources.len(), 21);
        let meshes = meshmodel::Mesh::from_resources("bench", read.resources).expect("checks");
        assert_eq!(meshes.len(), 1);
    }
}
