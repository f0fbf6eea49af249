//! The checks of a whole mesh: names and references, then each resource by kind, with the
//! helpers they share (ranges, known values, parents, regexes).
//!
//! ```text
//! node     virtual nodes and virtual services: listeners, health checks, backends
//! route    routes: matches, weighted targets, retries, timeouts
//! gateway  virtual gateways and gateway routes
//! tls      listener TLS, client policies, certificates and validation
//! logging  access log paths and formats (Envoy's command operators)
//! ```

use crate::appmesh::PortMapping;
use crate::problem::Problem;
use std::collections::{BTreeMap, BTreeSet};

use crate::mesh::check::gateway::check_virtual_gateway;
use crate::mesh::kinds::TABLES;
use crate::mesh::{Mesh, limits};

mod gateway;
pub(super) mod logging;
mod node;
mod route;
mod tls;

impl Mesh {
    /// Everything that is inconsistent; empty when the mesh is fine.
    pub fn check(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let Some(mesh) = &self.mesh else {
            if let Some((origin, name)) = self.mesh_names().next() {
                p.push(Problem::new(
                    origin,
                    "meshName",
                    format!("mesh `{name}` does not exist: create it first"),
                ));
            }
            return p;
        };
        let mesh_name = &mesh.value.mesh_name;
        check_name(&mut p, &mesh.origin, "meshName", mesh_name);
        for (i, tag) in mesh.value.tags.iter().flatten().enumerate() {
            let value = tag.value.as_deref().unwrap_or_default();
            if tag.key == crate::MTLS_TAG && !matches!(value, "STRICT" | "PERMISSIVE" | "DISABLED")
            {
                p.push(Problem::new(
                    &mesh.origin,
                    format!("tags[{i}].value"),
                    format!(
                        "`{value}` is not STRICT, PERMISSIVE or DISABLED (the tag {} sets the mesh's own mutual TLS)",
                        crate::MTLS_TAG
                    ),
                ));
            }
        }
        if mesh_name.contains('/') {
            p.push(Problem::new(
                &mesh.origin,
                "meshName",
                "must not contain `/`: an Envoy's node id (`mesh/MESH/virtualNode/NODE`) names its mesh between slashes",
            ));
        }
        check_ip_preference(
            &mut p,
            &mesh.origin,
            "spec.serviceDiscovery.ipPreference",
            mesh.value
                .spec
                .service_discovery
                .as_ref()
                .and_then(|sd| sd.ip_preference.as_ref()),
        );
        // Every change is checked against the whole mesh: read the names in place.
        for (origin, name) in self.mesh_names() {
            if name != mesh_name {
                p.push(Problem::new(
                    origin,
                    "meshName",
                    format!("`{name}` is not this mesh; the mesh is `{mesh_name}`"),
                ));
            }
        }
        for s in self.virtual_nodes.values() {
            self.check_virtual_node(&mut p, &s.origin, &s.value);
        }
        for s in self.virtual_routers.values() {
            check_name(
                &mut p,
                &s.origin,
                "virtualRouterName",
                &s.value.virtual_router_name,
            );
            check_listeners(
                &mut p,
                &s.origin,
                s.value.spec.listeners.iter().map(|l| &l.port_mapping),
            );
        }
        for s in self.routes.values() {
            self.check_route(&mut p, &s.origin, &s.value);
        }
        for s in self.virtual_services.values() {
            self.check_virtual_service(&mut p, &s.origin, &s.value);
        }
        for s in self.virtual_gateways.values() {
            check_virtual_gateway(&mut p, &s.origin, &s.value);
        }
        for s in self.gateway_routes.values() {
            self.check_gateway_route(&mut p, &s.origin, &s.value);
        }
        p
    }

    /// (origin, mesh name) of every resource but the mesh, in the order of
    /// [`Mesh::resources`], without copying them.
    pub(crate) fn mesh_names(&self) -> impl Iterator<Item = (&str, &str)> {
        TABLES.iter().flat_map(|t| t.mesh_names(self))
    }
}

pub(crate) fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

pub(crate) fn range(
    p: &mut Vec<Problem>,
    origin: &str,
    path: &str,
    value: i64,
    (lo, hi): (i64, i64),
) {
    if value < lo || value > hi {
        p.push(Problem::new(
            origin,
            path,
            format!("{value} is out of range; allowed: {lo} to {hi}"),
        ));
    }
}

/// The router or gateway (`what`, named at `field`) a route names, or a problem saying it
/// does not exist.
pub(crate) fn parent<'a, T>(
    p: &mut Vec<Problem>,
    origin: &str,
    (field, what): (&str, &str),
    name: &str,
    all: &'a BTreeMap<String, T>,
) -> Option<&'a T> {
    let found = all.get(name);
    if found.is_none() {
        p.push(Problem::new(
            origin,
            field,
            format!(
                "{what} `{name}` does not exist (known: {})",
                known(all.keys())
            ),
        ));
    }
    found
}

/// A route's priority is in range and it is exactly one of `kinds` (name, given); whether
/// its kind is clear.
pub(crate) fn one_kind(
    p: &mut Vec<Problem>,
    origin: &str,
    priority: Option<i64>,
    kinds: &[(&str, bool)],
) -> bool {
    if let Some(priority) = priority {
        range(p, origin, "spec.priority", priority, limits::PRIORITY);
    }
    if kinds.iter().filter(|(_, given)| *given).count() == 1 {
        return true;
    }
    let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
    let (last, rest) = names.split_last().map_or(("", &[][..]), |(l, r)| (*l, r));
    p.push(Problem::new(
        origin,
        "spec",
        format!("give exactly one of {} and {last}", rest.join(", ")),
    ));
    false
}

pub(crate) fn check_name(p: &mut Vec<Problem>, origin: &str, path: &str, name: &str) {
    if name.is_empty() || name.len() > limits::NAME_MAX {
        p.push(Problem::new(origin, path, "must be 1 to 255 characters"));
    }
}

/// App Mesh's IP preferences (the address family Envoy resolves hostnames to).
pub(crate) fn check_ip_preference(
    p: &mut Vec<Problem>,
    origin: &str,
    path: &str,
    value: Option<&String>,
) {
    const PREFERENCES: &[&str] = &["IPv6_PREFERRED", "IPv4_PREFERRED", "IPv4_ONLY", "IPv6_ONLY"];
    if let Some(v) = value {
        if !PREFERENCES.contains(&v.as_str()) {
            p.push(Problem::new(
                origin,
                path,
                format!("`{v}` is not one of {}", PREFERENCES.join(", ")),
            ));
        }
    }
}

pub(crate) fn check_listeners<'a>(
    p: &mut Vec<Problem>,
    origin: &str,
    ports: impl Iterator<Item = &'a PortMapping>,
) {
    let ports: Vec<&PortMapping> = ports.collect();
    let mut seen = BTreeSet::new();
    for (i, pm) in ports.iter().enumerate() {
        let at = format!("spec.listeners[{i}].portMapping.port");
        range(p, origin, &at, pm.port, limits::PORT);
        if !seen.insert(pm.port) {
            p.push(Problem::new(
                origin,
                at,
                format!("port {} has another listener already", pm.port),
            ));
        }
    }
}

/// A file Envoy reads: an absolute path.
pub(crate) fn check_path(p: &mut Vec<Problem>, origin: &str, at: &str, path: &str) {
    if !path.starts_with('/') {
        p.push(Problem::new(
            origin,
            at,
            format!("`{path}` must be an absolute path (Envoy reads it where it runs)"),
        ));
    }
}

/// Envoy compiles route regexes with RE2; refuse what does not compile, so Envoy never
/// has to refuse (NACK) a route configuration.
pub(crate) fn check_regex(p: &mut Vec<Problem>, origin: &str, at: &str, re: &str) {
    if re.is_empty() {
        p.push(Problem::new(
            origin,
            at,
            "a regular expression must not be empty (Envoy refuses one)",
        ));
    } else if let Err(e) = regex_syntax::Parser::new().parse(re) {
        let reason = e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        p.push(Problem::new(
            origin,
            at,
            format!("`{re}` is not a valid regular expression: {reason}"),
        ));
    } else if let Some(why) = regex_syntax::ast::parse::Parser::new()
        .parse(re)
        .ok()
        .and_then(|ast| {
            re2_refuses(&ast).or_else(|| {
                let size = RE2_BASE + re2_size(&ast);
                (size > RE2_PROGRAM_MAX).then(|| {
                    format!("its compiled size is about {size}, over the {RE2_PROGRAM_MAX} Envoy takes by default (a shorter pattern, or fewer repetitions)")
                })
            })
        })
    {
        p.push(Problem::new(
            origin,
            at,
            format!("`{re}` is not a regular expression Envoy (RE2) takes: {why}"),
        ));
    }
}

/// The largest compiled regex Envoy takes by default (RE2's program size; Envoy refuses
/// a larger one at its error threshold, 100).
const RE2_PROGRAM_MAX: u32 = 100;
/// What every RE2 program holds beside its pattern (measured: `a{99}` compiles to 103).
const RE2_BASE: u32 = 4;

/// An estimate, from above, of what `ast` adds to RE2's program size: a literal 1, a class
/// or `.` 2, a repetition its pattern as many times as it may repeat, plus 1; a group 2.
fn re2_size(ast: &regex_syntax::ast::Ast) -> u32 {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};
    match ast {
        Ast::Empty(_) | Ast::Flags(_) => 0,
        Ast::Literal(_) | Ast::Assertion(_) => 1,
        Ast::Dot(_) | Ast::ClassUnicode(_) | Ast::ClassPerl(_) | Ast::ClassBracketed(_) => 2,
        Ast::Repetition(r) => {
            let inner = re2_size(&r.ast);
            let times = match &r.op.kind {
                RepetitionKind::ZeroOrOne | RepetitionKind::ZeroOrMore => 1,
                RepetitionKind::OneOrMore => 2,
                RepetitionKind::Range(RepetitionRange::Exactly(n)) => *n,
                RepetitionKind::Range(RepetitionRange::AtLeast(n)) => n.saturating_add(1),
                RepetitionKind::Range(RepetitionRange::Bounded(a, b)) => (*a).max(*b),
            };
            inner.saturating_mul(times).saturating_add(1)
        }
        Ast::Group(g) => re2_size(&g.ast).saturating_add(2),
        Ast::Alternation(a) => a.asts.iter().map(re2_size).fold(
            u32::try_from(a.asts.len()).unwrap_or(u32::MAX),
            u32::saturating_add,
        ),
        Ast::Concat(c) => c.asts.iter().map(re2_size).fold(0, u32::saturating_add),
    }
}

/// The most times RE2 repeats anything (`x{1000}`).
const RE2_REPEAT_MAX: u32 = 1000;

/// What RE2 refuses that Rust's regex syntax takes: a repetition of a repetition
/// (`a**`, `a?+`), and counted repetitions past 1000.
fn re2_refuses(ast: &regex_syntax::ast::Ast) -> Option<String> {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};
    match ast {
        Ast::Repetition(r) => {
            if matches!(*r.ast, Ast::Repetition(_)) {
                return Some("a repetition of a repetition (as `a**` or `a?+`)".to_owned());
            }
            let most = match &r.op.kind {
                RepetitionKind::Range(RepetitionRange::Exactly(n))
                | RepetitionKind::Range(RepetitionRange::AtLeast(n)) => *n,
                RepetitionKind::Range(RepetitionRange::Bounded(a, b)) => (*a).max(*b),
                _ => 0,
            };
            if most > RE2_REPEAT_MAX {
                return Some(format!("a count over {RE2_REPEAT_MAX} (`{{{most}}}`)"));
            }
            re2_refuses(&r.ast)
        }
        Ast::Group(g) => re2_refuses(&g.ast),
        Ast::Alternation(a) => a.asts.iter().find_map(re2_refuses),
        Ast::Concat(c) => c.asts.iter().find_map(re2_refuses),
        _ => None,
    }
}
