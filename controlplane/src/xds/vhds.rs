//! Virtual hosts apart from their route configuration (VHDS), for Envoys on delta xDS.
//!
//! A node's egress route configuration holds a virtual host per backend: with a thousand
//! backends, a weight change to one of them changes one virtual host, yet the route
//! configuration sent is all thousand. A delta Envoy gets each route configuration
//! without its virtual hosts and with `vhds` (over the same ADS stream), and each virtual
//! host as a resource of its own, named `ROUTE_CONFIGURATION/HOST` as Envoy's VHDS names
//! them (it asks for them by the route configuration's name, and takes every resource in
//! that namespace). A weight change then sends one virtual host.
//!
//! State-of-the-world Envoys cannot take VHDS (Envoy accepts it only on delta xDS): they
//! get the route configurations whole, as the translation made them.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, Vhds};
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;

use crate::translate::ROUTE_TYPE;

/// The type URL of a virtual host sent on its own.
pub const VHOST_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// A node's route configurations split for VHDS.
#[derive(Debug, Default)]
pub struct Split {
    pub routes: Vec<(String, Any)>,
    pub hosts: Vec<(String, Any)>,
}

/// The namespace of a VHDS resource name: the route configuration it belongs to.
pub fn namespace(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(ns, _)| ns)
}

/// Splits `routes` (the translation's route configurations): each one with virtual hosts
/// loses them to resources of their own and gains `vhds`; one without any (nothing to
/// split), or one that does not decode, is kept as it is.
pub fn split(routes: &[(String, Any)]) -> Split {
    let mut out = Split::default();
    for (name, any) in routes {
        let config = RouteConfiguration::decode(any.value.as_slice())
            .ok()
            .filter(|c| !c.virtual_hosts.is_empty() && c.vhds.is_none());
        let Some(mut config) = config else {
            out.routes.push((name.clone(), any.clone()));
            continue;
        };
        for mut host in std::mem::take(&mut config.virtual_hosts) {
            // Envoy keys a VHDS virtual host by its own name and removes it by the
            // resource's: the two are one. The part after the last `/` is the host.
            host.name = format!("{name}/{}", host.name.replace('/', "_"));
            out.hosts.push((
                host.name.clone(),
                Any {
                    type_url: VHOST_TYPE.to_owned(),
                    value: host.encode_to_vec(),
                },
            ));
        }
        config.vhds = Some(Vhds {
            config_source: Some(core::ConfigSource {
                resource_api_version: core::ApiVersion::V3 as i32,
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                    core::AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
        });
        out.routes.push((
            name.clone(),
            Any {
                type_url: ROUTE_TYPE.to_owned(),
                value: config.encode_to_vec(),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::listing::Listing;
    use envoy_types::pb::envoy::config::route::v3::VirtualHost;

    /// The delta versions of a split's route configurations and virtual hosts.
    fn versions(split: &Split) -> (Vec<String>, Vec<String>) {
        (
            Listing::new(&split.routes).versions,
            Listing::new(&split.hosts).versions,
        )
    }

    fn config(name: &str, hosts: &[(&str, &str)]) -> (String, Any) {
        let config = RouteConfiguration {
            name: name.to_owned(),
            virtual_hosts: hosts
                .iter()
                .map(|(h, domain)| VirtualHost {
                    name: (*h).to_owned(),
                    domains: vec![(*domain).to_owned()],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        (
            name.to_owned(),
            Any {
                type_url: ROUTE_TYPE.to_owned(),
                value: config.encode_to_vec(),
            },
        )
    }

    #[test]
    fn each_virtual_host_goes_apart_named_in_its_route_configurations_namespace() {
        let split = split(&[
            config("rds_egress", &[("a.local", "a.local"), ("b/x", "b.local")]),
            config("empty", &[]),
        ]);
        let names: Vec<&str> = split.hosts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["rds_egress/a.local", "rds_egress/b_x"]);
        for (name, any) in &split.hosts {
            let host = VirtualHost::decode(any.value.as_slice()).expect("a virtual host");
            assert_eq!(&host.name, name, "the host's own name is the resource's");
            assert_eq!(namespace(name), Some("rds_egress"));
        }
        let egress = RouteConfiguration::decode(split.routes[0].1.value.as_slice()).expect("rc");
        assert!(egress.virtual_hosts.is_empty());
        assert!(egress.vhds.is_some());
        let empty = RouteConfiguration::decode(split.routes[1].1.value.as_slice()).expect("rc");
        assert!(empty.vhds.is_none(), "nothing to split: kept whole");
        let (route_versions, host_versions) = versions(&split);
        assert_eq!(route_versions.len(), 2);
        assert_eq!(host_versions.len(), 2);
        assert_ne!(host_versions[0], host_versions[1]);
    }

    #[test]
    fn a_weight_change_changes_one_virtual_host_and_not_its_route_configuration() {
        let before = versions(&split(&[config("r", &[("a", "a"), ("b", "b")])]));
        let after = versions(&split(&[config("r", &[("a", "a"), ("b", "b2")])]));
        assert_eq!(before.0, after.0);
        assert_eq!(before.1[0], after.1[0]);
        assert_ne!(before.1[1], after.1[1]);
    }
}
