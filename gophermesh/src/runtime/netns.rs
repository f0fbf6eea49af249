//! `up --netns`: one network namespace per task, as `awsvpc` gives an ECS task.
//!
//! Layout (everything lives in namespaces this run creates; the host's own network,
//! routes and iptables are never touched):
//! - a hub namespace `gm-PID-hub` holding a bridge `br0` with [`HUB_IP`]; the control
//!   plane's ADS listener is opened inside it, so sidecars reach it at `HUB_IP`;
//! - per task a namespace `gm-PID-N` with `eth0` (a veth whose peer is on the bridge) at
//!   `10.213.0.(10+N)`, `lo` up, `/etc/netns/gm-PID-N/hosts` resolving every
//!   `*.gophers.local` name (so `ip netns exec` shows it as `/etc/hosts`), and the
//!   APPMESH iptables rules built from the task definition's `proxyConfiguration`.
//!
//! Teardown deletes each task's iptables jumps, flushes and deletes the APPMESH chains,
//! then deletes every namespace and `/etc/netns` directory. Namespaces left by a run that
//! was killed (its pid is gone) are removed at the next start.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use meshmodel::ecs::AppMeshProxy;

/// The hub's address on the task network; the ADS server listens here.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// Names that are virtual services but no task's hostname resolve here; nothing answers
/// at this address, the sidecar intercepts the connection first (as on ECS, where any
/// address registered in Cloud Map works).
pub const PLACEHOLDER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 254);
const PREFIX: &str = "gm-";
const PREFIX_LEN: u8 = 24;
/// App Mesh's CNI plugin puts at most this many ports in one multiport match.
const MULTIPORT_MAX: usize = 15;

/// The name of task number `index`'s namespace (and, with `--containers`, of its pod).
pub fn task_name(index: usize) -> String {
    format!("{PREFIX}{}-{index}", std::process::id())
}

/// Whether `name` (of a namespace or pod) is `gm-PID-...` of a run whose process is gone.
pub fn from_dead_run(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
}

/// The address of task number `index` (0-based).
pub fn task_ip(index: usize) -> anyhow::Result<Ipv4Addr> {
    let last = u8::try_from(10 + index)
        .ok()
        .filter(|&n| n < 250)
        .context("--netns supports at most 240 tasks")?;
    Ok(Ipv4Addr::new(10, 213, 0, last))
}

/// Runs `program args`; an error carries the command and what it printed.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    super::supervise::run_checked(
        Command::new(program).args(args),
        &format!("cannot run {program} (is it installed? scripts/setup.sh installs iproute2 and iptables)"),
    )
    .map(drop)
}

/// `ip ARGS`.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn etc_dir(name: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(name)
}

/// A hosts file for `hosts`.
fn hosts_text(hosts: &[(String, Ipv4Addr)]) -> String {
    let mut text = String::from("127.0.0.1 localhost\n");
    for (name, addr) in hosts {
        let _ = writeln!(text, "{addr} {name}");
    }
    text
}

/// The jumps into the APPMESH chains, as both set-up (`-A`) and teardown (`-D`) use them.
const JUMPS: [&str; 2] = [
    "PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
    "OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
];

/// `-t nat WORDS...` as separate arguments. (No value here contains whitespace: ports,
/// uids, gids and addresses.)
fn nat(rule: &str) -> Vec<String> {
    ["-t", "nat"]
        .into_iter()
        .chain(rule.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// The iptables commands (arguments after `iptables`) that App Mesh's CNI plugin runs in a
/// task's namespace for this proxy configuration.
pub fn appmesh_rules(proxy: &AppMeshProxy) -> Vec<Vec<String>> {
    let mut rules = vec![
        "-N APPMESH_INGRESS".to_owned(),
        "-N APPMESH_EGRESS".to_owned(),
    ];
    for ports in proxy.app_ports.chunks(MULTIPORT_MAX) {
        rules.push(format!(
            "-A APPMESH_INGRESS -p tcp -m multiport --dports {} -j REDIRECT --to-port {}",
            join_ports(ports),
            proxy.proxy_ingress_port
        ));
    }
    if let Some(uid) = proxy.ignored_uid {
        rules.push(format!(
            "-A APPMESH_EGRESS -m owner --uid-owner {uid} -j RETURN"
        ));
    }
    if let Some(gid) = proxy.ignored_gid {
        rules.push(format!(
            "-A APPMESH_EGRESS -m owner --gid-owner {gid} -j RETURN"
        ));
    }
    for ports in proxy.egress_ignored_ports.chunks(MULTIPORT_MAX) {
        rules.push(format!(
            "-A APPMESH_EGRESS -p tcp -m multiport --dports {} -j RETURN",
            join_ports(ports)
        ));
    }
    if !proxy.egress_ignored_ips.is_empty() {
        rules.push(format!(
            "-A APPMESH_EGRESS -p tcp -d {} -j RETURN",
            proxy.egress_ignored_ips.join(",")
        ));
    }
    rules.push(format!(
        "-A APPMESH_EGRESS -p tcp -j REDIRECT --to {}",
        proxy.proxy_egress_port
    ));
    rules.extend(JUMPS.iter().map(|j| format!("-A {j}")));
    rules.iter().map(|r| nat(r)).collect()
}

/// The commands that undo [`appmesh_rules`]: the jumps, then flush and delete the chains.
pub fn appmesh_teardown() -> Vec<Vec<String>> {
    let mut steps: Vec<String> = JUMPS.iter().map(|j| format!("-D {j}")).collect();
    steps.extend(
        [
            "-F APPMESH_INGRESS",
            "-F APPMESH_EGRESS",
            "-X APPMESH_INGRESS",
            "-X APPMESH_EGRESS",
        ]
        .map(str::to_owned),
    );
    steps.iter().map(|r| nat(r)).collect()
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One task's namespace.
#[derive(Debug, Clone)]
pub struct TaskNs {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Whether the APPMESH rules were made in it (a virtual gateway's task has none).
    pub rules: bool,
}

/// The namespaces of one run. Dropping it tears everything down.
#[derive(Debug)]
pub struct Network {
    pub hub: String,
    pub tasks: Vec<TaskNs>,
    torn_down: bool,
}

/// The tasks' hosts files (`/etc/netns/NS/hosts`), without the namespaces.
#[derive(Debug, Clone)]
pub struct HostsFiles {
    tasks: Vec<TaskNs>,
}

impl HostsFiles {
    /// Rewrites every task's hosts file with `hosts`, in place: processes see the file
    /// through a bind mount (`ip netns exec`, a container volume), which a new file (a
    /// rename) would not reach. Returns whether anything changed.
    pub fn update_hosts(&self, hosts: &[(String, Ipv4Addr)]) -> anyhow::Result<bool> {
        let text = hosts_text(hosts);
        let mut changed = false;
        for task in &self.tasks {
            let path = etc_dir(&task.name).join("hosts");
            if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
                continue;
            }
            std::fs::write(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            changed = true;
        }
        Ok(changed)
    }
}

impl Network {
    /// Checks that this process may create namespaces (root, `ip` and `iptables` present).
    pub fn preflight() -> anyhow::Result<()> {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "--netns needs root (network namespaces and iptables); run as root, or leave out --netns for the loopback mode"
            );
        }
        for tool in ["ip", "iptables", "setpriv"] {
            if Command::new(tool).arg("-V").output().is_err() {
                bail!(
                    "--netns needs `{tool}`; install it with: apt-get install -y iproute2 iptables util-linux (scripts/setup.sh does this as root)"
                );
            }
        }
        Ok(())
    }

    /// Removes namespaces left by runs whose process is gone; returns their names.
    pub fn remove_leftovers() -> Vec<String> {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if !from_dead_run(name) {
                continue;
            }
            remove_namespace(name);
            removed.push(name.to_owned());
        }
        removed
    }

    /// Creates the hub and one namespace per task (in `proxies` order), with addresses,
    /// `/etc/netns/NS/hosts` from `hosts` and the APPMESH iptables rules of each task that
    /// has a proxy configuration.
    pub fn create(
        proxies: &[Option<&AppMeshProxy>],
        hosts: &[(String, Ipv4Addr)],
    ) -> anyhow::Result<Self> {
        Self::create_for(proxies, hosts, None)
    }

    /// [`Network::create`], where task `i`'s namespace is that of process `pids[i]` (a
    /// pod's infra container), named with `ip netns attach`, rather than a new one.
    pub fn create_for(
        proxies: &[Option<&AppMeshProxy>],
        hosts: &[(String, Ipv4Addr)],
        pids: Option<&[u32]>,
    ) -> anyhow::Result<Self> {
        let run = std::process::id();
        let mut network = Self {
            hub: format!("{PREFIX}{run}-hub"),
            tasks: Vec::new(),
            torn_down: false,
        };
        // On any error below, dropping `network` removes what was made so far.
        ip(&["netns", "add", &network.hub])?;
        let hub = network.hub.clone();
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        let hub_cidr = format!("{HUB_IP}/{PREFIX_LEN}");
        ip(&["-n", &hub, "addr", "add", &hub_cidr, "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        let hosts_file = hosts_text(hosts);
        for (index, proxy) in proxies.iter().enumerate() {
            let task = TaskNs {
                name: task_name(index),
                ip: task_ip(index)?,
                rules: proxy.is_some(),
            };
            match pids.and_then(|p| p.get(index)) {
                Some(pid) => ip(&["netns", "attach", &task.name, &pid.to_string()])?,
                None => ip(&["netns", "add", &task.name])?,
            }
            network.tasks.push(task.clone());
            let peer = format!("vt{index}");
            ip(&[
                "-n", &hub, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns",
                &task.name,
            ])?;
            ip(&["-n", &hub, "link", "set", &peer, "master", "br0", "up"])?;
            let cidr = format!("{}/{PREFIX_LEN}", task.ip);
            ip(&["-n", &task.name, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &task.name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &task.name, "link", "set", "lo", "up"])?;
            let etc = etc_dir(&task.name);
            std::fs::create_dir_all(&etc)
                .with_context(|| format!("cannot create {}", etc.display()))?;
            std::fs::write(etc.join("hosts"), &hosts_file)
                .with_context(|| format!("cannot write {}/hosts", etc.display()))?;
            for rule in proxy.map(appmesh_rules).unwrap_or_default() {
                let mut args: Vec<&str> = vec!["netns", "exec", &task.name, "iptables"];
                args.extend(rule.iter().map(String::as_str));
                ip(&args)?;
            }
        }
        Ok(network)
    }

    /// Connects the tasks to `to`, an address of the host, for an external control plane
    /// (`up --control-plane`): a veth pair from the hub to the host's namespace
    /// (`gu<pid>` on the host, a /30 of 10.214.0.0/16 chosen by the pid), a route to `to`
    /// alone in the hub and in every task, and masquerading in the hub, so that the host
    /// needs no route back. Nothing else leaves the tasks' network (their DNS lookups
    /// still fail at once, as without it). Deleting the hub deletes the pair. Returns the
    /// host side's address.
    pub fn add_uplink(&mut self, to: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
        let pid = std::process::id();
        let block = pid % (64 * 256);
        let (x, y) = (
            u8::try_from(block / 64).unwrap_or(0),
            u8::try_from(block % 64 * 4).unwrap_or(0),
        );
        let host = Ipv4Addr::new(10, 214, x, y + 1);
        let hub_side = Ipv4Addr::new(10, 214, x, y + 2);
        let outer = format!("gu{pid}");
        let hub = self.hub.clone();
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", "up0", "netns", &hub,
        ])
        .context("cannot make the uplink from the tasks' network to the host")?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{hub_side}/30"),
            "dev",
            "up0",
        ])?;
        ip(&["-n", &hub, "link", "set", "up0", "up"])?;
        let target = format!("{to}/32");
        ip(&[
            "-n",
            &hub,
            "route",
            "add",
            &target,
            "via",
            &host.to_string(),
        ])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &hub,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &hub,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "up0",
                "-j",
                "MASQUERADE",
            ],
        )?;
        for task in &self.tasks {
            ip(&[
                "-n",
                &task.name,
                "route",
                "add",
                &target,
                "via",
                &HUB_IP.to_string(),
            ])?;
        }
        Ok(host)
    }

    /// A handle on the tasks' hosts files that does not own (or tear down) the namespaces.
    pub fn clone_files(&self) -> HostsFiles {
        HostsFiles {
            tasks: self.tasks.clone(),
        }
    }

    /// Removes the iptables rules, the namespaces and their /etc/netns directories.
    /// Every step is tried even when one fails; returns what failed.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.torn_down {
            return failures;
        }
        self.torn_down = true;
        for task in self.tasks.iter().filter(|t| t.rules) {
            for rule in appmesh_teardown() {
                let mut args: Vec<&str> = vec!["netns", "exec", &task.name, "iptables"];
                args.extend(rule.iter().map(String::as_str));
                if let Err(e) = ip(&args) {
                    failures.push(format!("{e:#}"));
                }
            }
        }
        for task in self.tasks.iter().rev() {
            failures.extend(remove_namespace(&task.name));
        }
        failures.extend(remove_namespace(&self.hub));
        failures
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for failure in self.teardown() {
            eprintln!("gophermesh: teardown: {failure}");
        }
    }
}

/// Deletes namespace `name` and its /etc/netns directory; returns what failed.
fn remove_namespace(name: &str) -> Vec<String> {
    let mut failures = Vec::new();
    if netns_path(name).exists() {
        if let Err(e) = ip(&["netns", "delete", name]) {
            failures.push(format!("{e:#}"));
        }
    }
    let etc = etc_dir(name);
    if etc.exists() {
        if let Err(e) = std::fs::remove_dir_all(&etc) {
            failures.push(format!("cannot remove {}: {e}", etc.display()));
        }
    }
    failures
}

/// Runs `f` on a new thread that has entered namespace `ns`; sockets it opens stay in
/// that namespace. (A fresh thread each time: a pooled thread must not be left inside.)
pub async fn within<T, F>(ns: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = netns_path(ns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let result = std::fs::File::open(&path).and_then(|file| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                f()
            });
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))?
}

/// A TCP connection to `addr` opened inside namespace `ns`.
pub async fn dial(
    ns: &str,
    addr: SocketAddr,
    limit: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let stream = within(ns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, limit)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    tokio::net::TcpStream::from_std(stream)
}

/// A TCP listener on `addr` opened inside namespace `ns`.
pub async fn listen(ns: &str, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let listener = within(ns, move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .await?;
    tokio::net::TcpListener::from_std(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> AppMeshProxy {
        AppMeshProxy {
            container_name: "envoy".into(),
            ignored_uid: Some(1337),
            ignored_gid: None,
            proxy_ingress_port: 15000,
            proxy_egress_port: 15001,
            app_ports: vec![8080],
            egress_ignored_ips: vec!["169.254.170.2".into(), "169.254.169.254".into()],
            egress_ignored_ports: Vec::new(),
        }
    }

    #[test]
    fn the_rules_are_the_cni_plugins() {
        let rules: Vec<String> = appmesh_rules(&proxy())
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert_eq!(
            rules,
            [
                "-t nat -N APPMESH_INGRESS",
                "-t nat -N APPMESH_EGRESS",
                "-t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 8080 -j REDIRECT --to-port 15000",
                "-t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
                "-t nat -A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN",
                "-t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
                "-t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
                "-t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            ]
        );
    }

    #[test]
    fn long_port_lists_are_split_by_fifteen() {
        let mut p = proxy();
        p.app_ports = (9000..9020).collect();
        p.egress_ignored_ports = vec![22];
        p.ignored_gid = Some(1338);
        let rules: Vec<String> = appmesh_rules(&p).iter().map(|r| r.join(" ")).collect();
        let ingress: Vec<&String> = rules
            .iter()
            .filter(|r| r.contains("-A APPMESH_INGRESS"))
            .collect();
        assert_eq!(ingress.len(), 2);
        assert!(ingress[0].contains(
            "--dports 9000,9001,9002,9003,9004,9005,9006,9007,9008,9009,9010,9011,9012,9013,9014 "
        ));
        assert!(ingress[1].contains("--dports 9015,9016,9017,9018,9019 "));
        assert!(
            rules.contains(
                &"-t nat -A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN".to_owned()
            )
        );
        assert!(rules.contains(
            &"-t nat -A APPMESH_EGRESS -p tcp -m multiport --dports 22 -j RETURN".to_owned()
        ));
    }

    #[test]
    fn teardown_removes_jumps_before_chains() {
        let steps: Vec<String> = appmesh_teardown().iter().map(|r| r.join(" ")).collect();
        let jump = steps
            .iter()
            .position(|s| s.contains("-D OUTPUT"))
            .expect("jump");
        let delete = steps
            .iter()
            .position(|s| s.contains("-X APPMESH_EGRESS"))
            .expect("delete");
        assert!(jump < delete);
    }

    #[test]
    fn only_names_of_runs_that_are_gone_count_as_leftovers() {
        assert!(!from_dead_run(&task_name(0)), "this run is alive");
        assert!(from_dead_run("gm-4294967295-0"));
        assert!(!from_dead_run("gm-hub"));
        assert!(!from_dead_run("netns-1234"));
    }

    #[test]
    fn task_addresses_stay_in_the_subnet() {
        assert_eq!(task_ip(0).expect("ip"), Ipv4Addr::new(10, 213, 0, 10));
        assert!(task_ip(239).is_ok());
        assert!(task_ip(240).is_err());
    }
}
