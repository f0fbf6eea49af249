//! `gophermesh validate`: load mesh/ and taskdefs/ into the typed model, check them, and
//! print either a short summary or every problem with its file and JSON path.

use std::process::ExitCode;

use meshmodel::mesh::Sourced;
use meshmodel::taskdef::Task;
use meshmodel::{Mesh, Problems};

use crate::cli::SourceArgs;

/// Prints the summary (exit 0) or the problems (exit 1).
pub(crate) fn run(args: &SourceArgs) -> anyhow::Result<ExitCode> {
    match meshmodel::load(&args.mesh_dir, &args.taskdefs_dir) {
        Ok((mesh, tasks)) => {
            print!("{}", summary(&mesh, &tasks));
            println!("ok");
            Ok(ExitCode::SUCCESS)
        }
        Err(Problems(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            let n = problems.len();
            eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A few lines that say what the mesh is: counts, route weights, tasks.
pub(crate) fn summary(mesh: &Mesh, tasks: &[Task]) -> String {
    let mut out = format!(
        "mesh {}: {} virtual nodes, {} virtual routers, {} routes, {} virtual services\n",
        mesh.name().unwrap_or("(none)"),
        mesh.virtual_nodes.len(),
        mesh.virtual_routers.len(),
        mesh.routes.len(),
        mesh.virtual_services.len()
    );
    for Sourced { value: route, .. } in mesh.routes.values() {
        if let Some((_, targets)) = route.spec.weighted_targets() {
            let total: i64 = targets.iter().map(|t| t.weight).sum();
            let split: Vec<String> = targets
                .iter()
                .map(|t| format!("{} {}%", t.virtual_node, percent(t.weight, total)))
                .collect();
            out.push_str(&format!(
                "  route {}/{}: {}\n",
                route.virtual_router_name,
                route.route_name,
                split.join(", ")
            ));
        }
    }
    for Sourced { value: g, .. } in mesh.virtual_gateways.values() {
        let ports: Vec<String> = g
            .spec
            .listeners
            .iter()
            .map(|l| l.port_mapping.to_string())
            .collect();
        let routes: Vec<&str> = mesh
            .gateway_routes_of(&g.virtual_gateway_name)
            .iter()
            .map(|r| r.gateway_route_name.as_str())
            .collect();
        out.push_str(&format!(
            "  virtual gateway {} on {}: gateway routes {}\n",
            g.virtual_gateway_name,
            ports.join(", "),
            if routes.is_empty() {
                "(none)".to_owned()
            } else {
                routes.join(", ")
            }
        ));
    }
    out.push_str(&format!("task definitions: {}\n", tasks.len()));
    for t in tasks {
        match t.gateway() {
            Some(gateway) => out.push_str(&format!(
                "  {} -> virtual gateway {gateway} (Envoy alone, container `{}`)\n",
                t.definition.family, t.proxy.container_name
            )),
            None => out.push_str(&format!(
                "  {} -> virtual node {} (AppPorts {:?}, Envoy container `{}`)\n",
                t.definition.family, t.virtual_node, t.proxy.app_ports, t.proxy.container_name
            )),
        }
    }
    out
}

fn percent(weight: i64, total: i64) -> String {
    if total == 0 {
        return "0".to_owned();
    }
    let p = 100.0 * weight as f64 / total as f64;
    if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}
