//! Task definitions checked against the mesh: the checks the AWS API cannot make, because
//! they need both the task definition and the App Mesh resources.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ecs::{AppMeshProxy, ContainerDefinition, TaskDefinition};
use crate::mesh::{Mesh, Sourced};
use crate::problem::{Problem, Problems};

/// A task definition that fits the mesh, with what running it needs resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub origin: String,
    pub definition: TaskDefinition,
    /// The mesh and virtual node its Envoy serves, or `virtualGateway/G` for a virtual
    /// gateway's task ([`crate::GATEWAY_PREFIX`]).
    pub mesh_name: String,
    pub virtual_node: String,
    /// The APPMESH proxy configuration. A virtual gateway's task has none (its Envoy listens
    /// on the gateway's ports itself): it is described here by its Envoy container, the
    /// gateway's first listener port as its ingress and no app ports.
    pub proxy: AppMeshProxy,
}

impl Task {
    /// The virtual gateway this task runs (Envoy alone), if it is a gateway's.
    pub fn gateway(&self) -> Option<&str> {
        self.virtual_node.strip_prefix(crate::GATEWAY_PREFIX)
    }

    /// The key of its node across meshes: `MESH/NODE` (as the control plane keys Envoys).
    pub fn key(&self) -> String {
        format!("{}/{}", self.mesh_name, self.virtual_node)
    }

    /// The node's name as files and logs take it (`virtualGateway-G` for a gateway).
    pub fn file_stem(&self) -> String {
        self.virtual_node.replace('/', "-")
    }

    /// The containers other than Envoy, in the order the task definition lists them.
    pub fn app_containers(&self) -> impl Iterator<Item = &crate::ecs::ContainerDefinition> {
        self.definition
            .container_definitions
            .iter()
            .filter(|c| c.name != self.proxy.container_name)
    }
}

/// Reads every `*.json` file below `dir` (sorted, recursively, as a mesh directory is read)
/// as a task definition.
pub fn load_dir(dir: &Path) -> Result<Vec<Sourced<TaskDefinition>>, Problems> {
    let files = crate::mesh::json_files(dir).map_err(|e| {
        Problems::one(Problem::new(
            dir.display().to_string(),
            "",
            format!("cannot read: {e}"),
        ))
    })?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let origin = path.display().to_string();
        let parsed = crate::input::read_text(&path, crate::input::MAX_FILE)
            .map_err(|e| Problems::one(Problem::new(&origin, "", format!("cannot read: {e}"))))
            .and_then(|text| TaskDefinition::parse(&origin, &text));
        match parsed {
            Ok(value) => out.push(Sourced::new(origin, value)),
            Err(Problems(mut p)) => problems.append(&mut p),
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push(Problem::new(
            dir.display().to_string(),
            "",
            "no *.json task definitions here",
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Problems(problems))
    }
}

/// The virtual node an Envoy container's environment names, with the JSON path of the
/// variable: `APPMESH_RESOURCE_ARN` (`arn:aws:appmesh:R:A:mesh/M/virtualNode/N`) or the
/// older `APPMESH_VIRTUAL_NODE_NAME` (`mesh/M/virtualNode/N`). Returns (mesh, node, path).
fn envoy_node(
    origin: &str,
    index: usize,
    envoy: &crate::ecs::ContainerDefinition,
) -> Result<(String, String, String), Problem> {
    let found = envoy
        .env("APPMESH_RESOURCE_ARN")
        .map(|(i, v)| ("APPMESH_RESOURCE_ARN", i, v))
        .or_else(|| {
            envoy
                .env("APPMESH_VIRTUAL_NODE_NAME")
                .map(|(i, v)| ("APPMESH_VIRTUAL_NODE_NAME", i, v))
        });
    let Some((var, i, value)) = found else {
        return Err(Problem::new(
            origin,
            format!("containerDefinitions[{index}].environment"),
            "the Envoy container needs APPMESH_RESOURCE_ARN (the virtual node's ARN) to know which virtual node it is",
        ));
    };
    let path = format!("containerDefinitions[{index}].environment[{i}].value");
    let resource = match value.find("mesh/") {
        Some(at) => &value[at..],
        None => value,
    };
    let parts: Vec<&str> = resource.split('/').collect();
    match parts.as_slice() {
        ["mesh", mesh, "virtualNode", node] if !mesh.is_empty() && !node.is_empty() => {
            Ok(((*mesh).to_owned(), (*node).to_owned(), path))
        }
        _ => Err(Problem::new(
            origin,
            path,
            format!(
                "{var} `{value}` does not name a virtual node (expected …mesh/MESH/virtualNode/NODE)"
            ),
        )),
    }
}

/// The version a virtual node's name ends with (`distributor-v2` → `v2`).
fn node_version(node: &str) -> Option<&str> {
    let (_, suffix) = node.rsplit_once('-')?;
    let digits = suffix.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(suffix)
}

/// Checks `tasks` against `mesh`; on success, each task with its node and proxy resolved.
pub fn check(mesh: &Mesh, tasks: &[Sourced<TaskDefinition>]) -> Result<Vec<Task>, Problems> {
    check_tasks(mesh, tasks, true)
}

/// Like [`check`], for a mesh that is still being built (through the API): a task whose
/// virtual node does not exist yet is accepted, and the checks against that node wait.
pub fn check_allowing_missing_nodes(
    mesh: &Mesh,
    tasks: &[Sourced<TaskDefinition>],
) -> Result<Vec<Task>, Problems> {
    check_tasks(mesh, tasks, false)
}

/// Checks `tasks` against the meshes they name (`meshes` by name), as [`check`] (or, when
/// not `require_nodes`, [`check_allowing_missing_nodes`]) checks them against one: each
/// task definition goes with the mesh its Envoy's `APPMESH_RESOURCE_ARN` (or
/// `APPMESH_VIRTUAL_NODE_NAME`) names, or with the only mesh when it names none that is
/// held. Families are unique across all of them.
pub fn check_in_meshes(
    meshes: &BTreeMap<String, Mesh>,
    tasks: &[Sourced<TaskDefinition>],
    require_nodes: bool,
) -> Result<Vec<Task>, Problems> {
    let none = Mesh::default();
    let only = match meshes.len() {
        1 => meshes.values().next(),
        _ => None,
    };
    let mut groups: BTreeMap<Option<&String>, Vec<Sourced<TaskDefinition>>> = BTreeMap::new();
    for task in tasks {
        let named = named_mesh(&task.value).and_then(|m| meshes.get_key_value(&m).map(|(k, _)| k));
        groups.entry(named).or_default().push(task.clone());
    }
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut families: BTreeMap<&str, &str> = BTreeMap::new();
    for Sourced { origin, value } in tasks {
        if let Some(previous) = families.insert(&value.family, origin) {
            problems.push(Problem::new(
                origin,
                "family",
                format!("family `{}` is also used by {previous}", value.family),
            ));
        }
    }
    for (named, group) in groups {
        let mesh = named.and_then(|n| meshes.get(n)).or(only).unwrap_or(&none);
        match check_tasks(mesh, &group, require_nodes) {
            Ok(mut checked) => out.append(&mut checked),
            Err(Problems(mut more)) => problems.append(&mut more),
        }
    }
    // A family used twice in one mesh's tasks is said by both checks: once is enough.
    let mut said = std::collections::BTreeSet::new();
    problems.retain(|p| said.insert(p.to_string()));
    match problems.is_empty() {
        true => Ok(out),
        false => Err(Problems(problems)),
    }
}

/// The mesh a task definition's containers name in `APPMESH_RESOURCE_ARN` or
/// `APPMESH_VIRTUAL_NODE_NAME` (a virtual node's or gateway's), if any does.
fn named_mesh(td: &TaskDefinition) -> Option<String> {
    td.container_definitions.iter().find_map(|c| {
        ["APPMESH_RESOURCE_ARN", "APPMESH_VIRTUAL_NODE_NAME"]
            .iter()
            .find_map(|var| {
                let (_, value) = c.env(var)?;
                let resource = value.find("mesh/").map_or(value, |at| &value[at..]);
                let mut parts = resource.split('/');
                (parts.next() == Some("mesh"))
                    .then(|| parts.next())
                    .flatten()
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
            })
    })
}

fn check_tasks(
    mesh: &Mesh,
    tasks: &[Sourced<TaskDefinition>],
    require_nodes: bool,
) -> Result<Vec<Task>, Problems> {
    let mut p = Vec::new();
    let mut out = Vec::new();
    let mut families: BTreeMap<&str, &str> = BTreeMap::new();
    for Sourced { origin, value: td } in tasks {
        if let Some(why) = bad_family(&td.family) {
            p.push(Problem::new(origin, "family", why));
        }
        if let Some(previous) = families.insert(&td.family, origin) {
            p.push(Problem::new(
                origin,
                "family",
                format!("family `{}` is also used by {previous}", td.family),
            ));
        }
        if td.network_mode.as_deref() != Some("awsvpc") {
            p.push(Problem::new(
                origin,
                "networkMode",
                format!(
                    "`{}`: an APPMESH proxy configuration needs networkMode awsvpc",
                    td.network_mode.as_deref().unwrap_or("(unset)")
                ),
            ));
        }
        // A virtual gateway's task: Envoy alone, no proxy configuration.
        if td.proxy_configuration.is_none() {
            if let Some(task) = gateway_task(&mut p, mesh, origin, td, require_nodes) {
                out.push(task);
                continue;
            }
        }
        let proxy = match td.appmesh_proxy(origin) {
            Ok(proxy) => proxy,
            Err(Problems(mut more)) => {
                p.append(&mut more);
                continue;
            }
        };
        let Some((envoy_index, envoy)) = td.container(&proxy.container_name) else {
            p.push(Problem::new(
                origin,
                "proxyConfiguration.containerName",
                format!("no container is called `{}`", proxy.container_name),
            ));
            continue;
        };
        let (node_mesh, node, node_path) = match envoy_node(origin, envoy_index, envoy) {
            Ok(found) => found,
            Err(problem) => {
                p.push(problem);
                continue;
            }
        };
        if let Some(name) = mesh.name() {
            if node_mesh != name {
                p.push(Problem::new(
                    origin,
                    &node_path,
                    format!("names mesh `{node_mesh}`, but the mesh is `{name}`"),
                ));
            }
        }
        let vn = mesh.virtual_nodes.get(&node);
        if vn.is_none() && require_nodes {
            p.push(Problem::new(
                origin,
                &node_path,
                format!(
                    "virtual node `{node}` does not exist (known: {})",
                    mesh.virtual_nodes
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            continue;
        }
        check_envoy_container(&mut p, origin, envoy_index, envoy, &proxy);
        if let Some(vn) = vn {
            check_app_ports(&mut p, origin, td, &proxy, &node, vn);
        }
        check_app_containers(&mut p, origin, td, envoy_index, &proxy, &node);
        out.push(Task {
            origin: origin.clone(),
            definition: (**td).clone(),
            mesh_name: node_mesh,
            virtual_node: node,
            proxy,
        });
    }
    if p.is_empty() {
        Ok(out)
    } else {
        Err(Problems(p))
    }
}

/// The Envoy container runs as the IgnoredUID user (or its own traffic loops back into
/// it) and has a health check (or nothing waiting on it ever starts).
fn check_envoy_container(
    p: &mut Vec<Problem>,
    origin: &str,
    envoy_index: usize,
    envoy: &ContainerDefinition,
    proxy: &AppMeshProxy,
) {
    let user_path = format!("containerDefinitions[{envoy_index}].user");
    match (proxy.ignored_uid, envoy.user.as_deref()) {
        (Some(uid), Some(user)) if user.split(':').next() != Some(uid.to_string().as_str()) => p.push(Problem::new(
            origin,
            &user_path,
            format!("Envoy runs as user `{user}` but IgnoredUID is {uid}: Envoy's own traffic would be redirected back into Envoy"),
        )),
        (Some(uid), None) => p.push(Problem::new(
            origin,
            &user_path,
            format!("missing: Envoy must run as the IgnoredUID user ({uid}), or its own traffic loops back into it"),
        )),
        _ => {}
    }
    if envoy.health_check.is_none() {
        p.push(Problem::new(
            origin,
            format!("containerDefinitions[{envoy_index}].healthCheck"),
            "missing: without a health check Envoy never becomes HEALTHY, so containers waiting on it never start",
        ));
    }
}

/// Each app container: its ports are AppPorts (or inbound traffic bypasses Envoy), it
/// waits for Envoy to be HEALTHY, and its version variables say what its node is.
fn check_app_containers(
    p: &mut Vec<Problem>,
    origin: &str,
    td: &TaskDefinition,
    envoy_index: usize,
    proxy: &AppMeshProxy,
    node: &str,
) {
    for (ci, c) in td.container_definitions.iter().enumerate() {
        if ci == envoy_index {
            continue;
        }
        for (pi, pm) in c.port_mappings.iter().enumerate() {
            if let Some(port) = pm.container_port {
                if u16::try_from(port).map_or(true, |port| !proxy.app_ports.contains(&port)) {
                    p.push(Problem::new(
                        origin,
                        format!("containerDefinitions[{ci}].portMappings[{pi}].containerPort"),
                        format!("port {port} is not in AppPorts {:?}, so inbound traffic to it would bypass Envoy", proxy.app_ports),
                    ));
                }
            }
        }
        let waits = c
            .depends_on
            .iter()
            .any(|d| d.container_name == proxy.container_name && d.condition == "HEALTHY");
        if !waits {
            p.push(Problem::new(
                origin,
                format!("containerDefinitions[{ci}].dependsOn"),
                format!(
                    "container `{}` must depend on `{}` with condition HEALTHY, or it starts before Envoy can carry its traffic",
                    c.name, proxy.container_name
                ),
            ));
        }
        if let Some(want) = node_version(node) {
            for var in ["GOPHER_VERSION", "Tag"] {
                if let Some((i, got)) = c.env(var) {
                    if got != want {
                        p.push(Problem::new(
                            origin,
                            format!("containerDefinitions[{ci}].environment[{i}].value"),
                            format!("{var}={got}, but this task is virtual node `{node}`: it would answer as {got}"),
                        ));
                    }
                }
            }
        }
    }
}

/// The task of a virtual gateway, when `td` is one: a single container whose
/// `APPMESH_RESOURCE_ARN` names a virtual gateway (as App Mesh's ingress gateways ran on
/// ECS: the Envoy image alone, its port mappings the gateway's listener ports). `None`
/// when it is not a gateway's (it is then checked as a node's); problems go to `p`.
fn gateway_task(
    p: &mut Vec<Problem>,
    mesh: &Mesh,
    origin: &str,
    td: &TaskDefinition,
    require_nodes: bool,
) -> Option<Task> {
    let (index, envoy, value) =
        td.container_definitions
            .iter()
            .enumerate()
            .find_map(|(i, c)| {
                c.env("APPMESH_RESOURCE_ARN")
                    .or_else(|| c.env("APPMESH_VIRTUAL_NODE_NAME"))
                    .filter(|(_, v)| crate::gateway_from_id(v).is_some())
                    .map(|(_, v)| (i, c, v))
            })?;
    let (gateway_mesh, gateway) = crate::gateway_from_id(value)?;
    if td.container_definitions.len() > 1 {
        p.push(Problem::new(
            origin,
            "containerDefinitions",
            format!(
                "a virtual gateway's task runs Envoy alone; `{}` is not the only container",
                envoy.name
            ),
        ));
    }
    if let Some(name) = mesh.name() {
        if gateway_mesh != name {
            p.push(Problem::new(
                origin,
                format!("containerDefinitions[{index}].environment"),
                format!("names mesh `{gateway_mesh}`, but the mesh is `{name}`"),
            ));
        }
    }
    if envoy.health_check.is_none() {
        p.push(Problem::new(
            origin,
            format!("containerDefinitions[{index}].healthCheck"),
            "missing: without a health check Envoy never becomes HEALTHY",
        ));
    }
    let ports: Vec<i64> = match mesh.virtual_gateways.get(gateway) {
        Some(g) => g
            .value
            .spec
            .listeners
            .iter()
            .map(|l| l.port_mapping.port)
            .collect(),
        None if require_nodes => {
            p.push(Problem::new(
                origin,
                format!("containerDefinitions[{index}].environment"),
                format!(
                    "virtual gateway `{gateway}` does not exist (known: {})",
                    mesh.virtual_gateways
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            return None;
        }
        None => Vec::new(),
    };
    for (i, pm) in envoy.port_mappings.iter().enumerate() {
        if let Some(port) = pm.container_port {
            if !ports.is_empty() && !ports.contains(&port) {
                p.push(Problem::new(
                    origin,
                    format!("containerDefinitions[{index}].portMappings[{i}].containerPort"),
                    format!(
                        "port {port} is not a listener port of virtual gateway `{gateway}` ({ports:?})"
                    ),
                ));
            }
        }
    }
    let first = ports
        .first()
        .and_then(|p| u16::try_from(*p).ok())
        .unwrap_or(0);
    Some(Task {
        origin: origin.to_owned(),
        definition: td.clone(),
        mesh_name: gateway_mesh.to_owned(),
        virtual_node: format!("{}{gateway}", crate::GATEWAY_PREFIX),
        proxy: AppMeshProxy {
            container_name: envoy.name.clone(),
            ignored_uid: None,
            ignored_gid: None,
            proxy_ingress_port: first,
            proxy_egress_port: 15001,
            app_ports: Vec::new(),
            egress_ignored_ips: Vec::new(),
            egress_ignored_ports: Vec::new(),
        },
    })
}

/// AppPorts must be the node's listener ports.
fn check_app_ports(
    p: &mut Vec<Problem>,
    origin: &str,
    td: &TaskDefinition,
    proxy: &AppMeshProxy,
    node: &str,
    vn: &Sourced<crate::appmesh::VirtualNodeInput>,
) {
    let node_ports: Vec<u16> = vn
        .value
        .spec
        .listeners
        .iter()
        .filter_map(|l| u16::try_from(l.port_mapping.port).ok())
        .collect();
    let app_ports_path = td
        .proxy_configuration
        .as_ref()
        .and_then(|pc| pc.properties.iter().position(|kv| kv.name == "AppPorts"))
        .map(|i| format!("proxyConfiguration.properties[{i}].value"))
        .unwrap_or_else(|| "proxyConfiguration.properties".to_owned());
    let mut sorted_app = proxy.app_ports.clone();
    sorted_app.sort_unstable();
    let mut sorted_node = node_ports.clone();
    sorted_node.sort_unstable();
    if sorted_app != sorted_node {
        p.push(Problem::new(
            origin,
            &app_ports_path,
            format!(
                "AppPorts {:?} differ from virtual node `{node}`'s listener ports {:?} ({})",
                proxy.app_ports, node_ports, vn.origin
            ),
        ));
    }
}

/// Why ECS would refuse `family` as a task definition family, if it would: up to 255
/// letters, digits, hyphens and underscores (so a family is also a safe file name).
fn bad_family(family: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if family.is_empty() || family.len() > 255 {
        return Some("a family is 1 to 255 letters, digits, hyphens and underscores".into());
    }
    family.chars().find(|c| !allowed(*c)).map(|c| {
        format!(
            "{c:?} is not allowed in family {family:?} (letters, digits, hyphens and underscores are, as ECS allows)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A family ECS would refuse (a path, a space, nothing) is refused by name: exports
    /// write files named after families, which then cannot leave their directory.
    #[test]
    fn families_are_what_ecs_allows() {
        for good in ["gophers-requester", "Distributor_v2", "a"] {
            assert_eq!(bad_family(good), None, "{good}");
        }
        for (bad, says) in [
            ("../../outside/x", "'.' is not allowed"),
            ("with space", "' ' is not allowed"),
            ("", "1 to 255"),
            (&"x".repeat(256), "1 to 255"),
        ] {
            let why = bad_family(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(why.contains(says), "{bad}: {why}");
        }
    }

    #[test]
    fn node_versions_come_from_the_name_suffix() {
        assert_eq!(node_version("distributor-v2"), Some("v2"));
        assert_eq!(node_version("distributor-v10"), Some("v10"));
        assert_eq!(node_version("requester"), None);
        assert_eq!(node_version("distributor-vx"), None);
    }
}
