//! The banner `up` prints once the mesh is up: where to curl, and commands that run as
//! printed from the shell that started it (the programs' paths, not bare names).

use super::Up;
use crate::progress::{GATEWAY_AT, REQUESTER_AT, command_here};
use crate::runtime::Plan;

impl Up<'_> {
    pub(super) fn banner(
        &self,
        requester: &str,
        gateway: Option<&(String, String)>,
        control: &str,
        appmesh: &str,
        plan: &Plan,
    ) {
        println!();
        println!(
            "gophermesh is up in {:.1} s. {REQUESTER_AT}{requester}/",
            self.started.elapsed().as_secs_f64()
        );
        if let Some((url, name)) = gateway {
            println!(
                "{GATEWAY_AT}{url}/ (virtual gateway {name}: its gateway routes decide what enters)"
            );
        }
        println!();
        let me = command_here("gophermesh");
        println!("Try:");
        println!(
            "  open {requester}/ in a browser (the gophers as they answer), or the console at {control}/"
        );
        println!(
            "  {me} console --control-url {control}      (a sign-in link: shift weights from the page)"
        );
        println!("  curl {requester}/");
        println!("  curl '{requester}/compare?n=1000'");
        if let Some((url, _)) = gateway {
            println!(
                "  curl {url}/distributor/      (into the mesh through the gateway: the distributor's routes, 90/10)"
            );
        }
        let names = self.store.current().names();
        let mesh = names.first().map_or("gophermesh", String::as_str);
        // With several meshes, a route is named with its mesh.
        let which = match names.len() {
            1 => String::new(),
            _ => format!(" --mesh {mesh}"),
        };
        println!(
            "  {me} route set distributor distributor-v1=50 distributor-v2=50{which} --control-url {control}"
        );
        println!("  {me} status --control-url {control}");
        // The API is open unless --api-access-key-id is given; the CLI then needs no keys.
        let sign = match self.config.api_credentials {
            Some(_) => "",
            None => " --no-sign-request",
        };
        println!(
            "  {} appmesh list-virtual-nodes --mesh-name {mesh} --endpoint-url {appmesh} --region {}{sign}",
            command_here("aws"),
            self.config.identity.region
        );
        if let Some(ns) = self
            .ordered
            .first()
            .and_then(|t| plan.sites.get(&t.key()))
            .and_then(|s| s.netns.as_ref())
        {
            println!("  ip netns exec {ns} iptables -t nat -S      (the APPMESH rules of a task)");
        }
        println!();
        println!(
            "Logs are in {}. Ctrl-C stops everything.",
            self.config.state_dir.join("run").display()
        );
        println!("ready");
    }
}
