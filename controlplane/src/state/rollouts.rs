//! The rollouts as changes to the store: a start, a person's pause, resume or abort, and
//! one look of the driver. Each is one change, stored with the route it sets (so the App
//! Mesh API shows every step as an ordinary route update), checked against the whole
//! mesh like any other.

use std::sync::Arc;

use meshmodel::appmesh::WeightedTarget;
use meshmodel::{Key, Mesh, Problems, Resource};

use super::rollout::{AbStage, Counts, Plan, Refused, Rollout};
use super::snapshot::{MeshState, Snapshot};
use super::store::{Next, Store, UpdateError};
use super::weights::{find_route, header_route, set_targets};

/// Why a rollout change was not made.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A value of the request is out of range or does not fit the route.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// No such mesh, route or rollout.
    #[error("{0}")]
    NotFound(String),
    /// The route already has a rollout in progress.
    #[error("{0}")]
    Conflict(String),
    /// The mesh refuses the weights (as it would refuse them from `route set`).
    #[error("{0}")]
    Mesh(Problems),
    /// The store could not write the change; nothing changed.
    #[error("{0}")]
    Storage(String),
    /// The change would change nothing (a driver's look that decided nothing).
    #[error("nothing to change")]
    Unchanged,
}

impl From<UpdateError<RolloutError>> for RolloutError {
    fn from(e: UpdateError<RolloutError>) -> Self {
        match e {
            UpdateError::Refused(e) => e,
            UpdateError::Storage(e) => Self::Storage(e.outcome()),
        }
    }
}

/// What a person does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
}

/// Which route: its mesh (the only one when `None`), its router (the only one with a route
/// of that name when `None`) and its name.
#[derive(Debug, Clone, Copy)]
pub struct RouteRef<'a> {
    pub mesh: Option<&'a str>,
    pub router: Option<&'a str>,
    pub route: &'a str,
}

/// The mesh `route` names, and its state.
fn mesh_of<'s>(
    snapshot: &'s Snapshot,
    route: &RouteRef<'_>,
) -> Result<(&'s str, &'s Arc<MeshState>), RolloutError> {
    snapshot
        .pick(route.mesh)
        .map_err(|e| RolloutError::NotFound(format!("--mesh: {e}")))
}

/// The change that sets route `router/route` of `mesh` to `targets` (when given) and
/// stores `rollout` beside it. The route of its A/B stage is there while that stage runs
/// (paused too), and only then.
fn change(
    (name, state): (&str, &MeshState),
    rollout: Rollout,
    targets: Option<Vec<WeightedTarget>>,
) -> Result<Next, RolloutError> {
    let mut mesh: Mesh = match targets {
        Some(targets) => set_targets(&state.mesh, &rollout.router, &rollout.route, targets)
            .map_err(RolloutError::Mesh)?,
        None => state.mesh.clone(),
    };
    let held = state
        .rollouts
        .get(&rollout.key())
        .and_then(|r| r.ab.as_ref());
    let wanted = rollout.ab.as_ref().filter(|_| rollout.phase.is_active());
    let key = |route: &str| Key::Route(rollout.router.clone(), route.to_owned());
    if let Some(old) = held.filter(|old| wanted.is_none_or(|w| w.route != old.route)) {
        if mesh.get(&key(&old.route)).is_some() {
            mesh = mesh
                .remove(&key(&old.route))
                .map_err(|e| RolloutError::Conflict(e.to_string()))?;
        }
    }
    if let Some(ab) = wanted {
        if mesh.get(&key(&ab.route)).is_none() {
            let (origin, route) = header_route(
                &mesh,
                (&rollout.router, &rollout.route),
                (&ab.route, &ab.header, &ab.value),
                &rollout.target,
            )
            .map_err(RolloutError::Mesh)?;
            mesh = mesh
                .apply(&origin, Resource::Route(route))
                .map_err(RolloutError::Mesh)?;
        }
    }
    Ok(Next {
        rollouts: vec![(name.to_owned(), rollout.key(), Some(rollout))],
        ..Next::mesh(name, mesh)
    })
}

/// The rollout of `route` in `state`.
fn rollout_of<'s>(state: &'s MeshState, route: &RouteRef<'_>) -> Result<&'s Rollout, RolloutError> {
    let found: Vec<&Rollout> = state
        .rollouts
        .values()
        .filter(|r| r.route == route.route && route.router.is_none_or(|n| n == r.router))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(RolloutError::NotFound(format!(
            "route `{}` has no rollout",
            route.route
        ))),
        _ => Err(RolloutError::Refused(Refused {
            flag: "--router",
            reason: format!(
                "more than one router has a rollout of a route `{}`; name the router",
                route.route
            ),
        })),
    }
}

impl Store {
    /// Starts a rollout of `route` to `target` as `plan` says, its first step set on the
    /// route in the same change; refused (nothing changed) when the route, the target or
    /// the plan is wrong or the route has a rollout in progress.
    pub fn start_rollout(
        &self,
        route: RouteRef<'_>,
        target: &str,
        (plan, header): (&Plan, Option<&str>),
        now_ms: u64,
    ) -> Result<(String, Rollout), RolloutError> {
        let mut started = None;
        self.update_with(|s| {
            let (name, state) = mesh_of(s, &route)?;
            let entry = find_route(&state.mesh, route.router, route.route)
                .map_err(|p| RolloutError::NotFound(format!("ROUTE: {p}")))?;
            let (router, route_name) = (
                entry.value.virtual_router_name.as_str(),
                entry.value.route_name.as_str(),
            );
            if let Some(held) = state.rollouts.get(&format!("{router}/{route_name}")) {
                if held.phase.is_active() {
                    return Err(RolloutError::Conflict(format!(
                        "route {route_name} already has a rollout in progress (to {}); abort it first",
                        held.target
                    )));
                }
            }
            let current = entry.value.spec.weighted_targets().map(|(_, t)| t.to_vec());
            let Some(current) = current else {
                return Err(RolloutError::NotFound(format!(
                    "ROUTE: route {route_name} has no weighted targets"
                )));
            };
            let ab = header
                .map(|pair| AbStage::parse(pair, route_name))
                .transpose()?;
            if let Some(ab) = &ab {
                if state
                    .mesh
                    .get(&Key::Route(router.to_owned(), ab.route.clone()))
                    .is_some()
                {
                    return Err(RolloutError::Conflict(format!(
                        "--header: router {router} already has a route {} (the A/B stage's)",
                        ab.route
                    )));
                }
            }
            let rollout = Rollout::start(
                (router, route_name),
                target,
                (plan.clone(), ab),
                &current,
                now_ms,
            )?;
            started = Some((name.to_owned(), rollout.clone()));
            let targets = rollout.applied.clone();
            change((name, state), rollout, Some(targets))
        })?;
        Ok(started.expect("set by the stored change"))
    }

    /// Pauses, resumes or aborts the rollout of `route`; the rollout as it then is.
    pub fn act_on_rollout(
        &self,
        route: RouteRef<'_>,
        action: Action,
        now_ms: u64,
    ) -> Result<(String, Rollout), RolloutError> {
        let mut acted = None;
        self.update_with(|s| {
            let (name, state) = mesh_of(s, &route)?;
            let mut rollout = rollout_of(state, &route)?.clone();
            let route_name = rollout.route.clone();
            let over = |why: &str| {
                RolloutError::Conflict(format!("the rollout of route {route_name} {why}"))
            };
            if !rollout.phase.is_active() {
                return Err(over("is over"));
            }
            let targets = match action {
                Action::Pause => {
                    rollout.pause(now_ms, "paused by hand".to_owned());
                    None
                }
                Action::Resume => Some(
                    rollout
                        .resume(now_ms)
                        .ok_or_else(|| over("is not paused"))?,
                ),
                // A route deleted meanwhile has nothing to put back: the rollout just ends.
                Action::Abort => rollout.abort(now_ms).filter(|_| {
                    find_route(&state.mesh, Some(&rollout.router), &rollout.route).is_ok()
                }),
            };
            acted = Some((name.to_owned(), rollout.clone()));
            change((name, state), rollout, targets)
        })?;
        Ok(acted.expect("set by the stored change"))
    }

    /// One look of driver `me` at rollout `key` (`ROUTER/ROUTE`) of mesh `mesh`, with the
    /// target's counts `counts`: takes or renews its lease (until `lease_until_ms`),
    /// pauses the rollout when its route's targets are not those it set (another hand
    /// changed them), and otherwise lets the rollout decide. Stores what changed;
    /// [`RolloutError::Unchanged`] when nothing did (nothing is written), or when another
    /// replica holds the lease.
    pub fn drive_rollout(
        &self,
        (mesh, key): (&str, &str),
        me: &str,
        (now_ms, lease_until_ms): (u64, u64),
        counts: Option<&Counts>,
    ) -> Result<Rollout, RolloutError> {
        let mut driven = None;
        self.update_with(|s| {
            let state = s.mesh(mesh).ok_or(RolloutError::Unchanged)?;
            let held = state.rollouts.get(key).ok_or(RolloutError::Unchanged)?;
            if !held.phase.is_active() || !held.drivable_by(me, now_ms) {
                return Err(RolloutError::Unchanged);
            }
            let mut rollout = held.clone();
            // Renewed once half of it is gone: a write per half lease, not per look.
            let renew = rollout.lease.as_ref().is_none_or(|l| {
                l.holder != me || l.until_ms.saturating_sub(now_ms) < (lease_until_ms - now_ms) / 2
            });
            if renew {
                rollout.hold_lease(me, now_ms, lease_until_ms);
            }
            let current = find_route(&state.mesh, Some(&rollout.router), &rollout.route)
                .ok()
                .and_then(|r| r.value.spec.weighted_targets().map(|(_, t)| t.to_vec()));
            let ab_gone = rollout.ab.as_ref().is_some_and(|ab| {
                state
                    .mesh
                    .get(&Key::Route(rollout.router.clone(), ab.route.clone()))
                    .is_none()
            });
            let targets = match current {
                Some(_) if ab_gone => {
                    let route = rollout.checked_route().to_owned();
                    rollout.pause(
                        now_ms,
                        format!("the A/B stage's route {route} was deleted by another hand; resume to make it again"),
                    );
                    None
                }
                Some(current) if current == rollout.applied => rollout.decide(now_ms, counts),
                Some(current) => {
                    let now: Vec<String> = current
                        .iter()
                        .map(|t| format!("{}={}", t.virtual_node, t.weight))
                        .collect();
                    rollout.pause(
                        now_ms,
                        format!(
                            "route {} was changed by another hand (now {}); resume to go on from {}%",
                            rollout.route,
                            now.join(" "),
                            rollout.weight()
                        ),
                    );
                    None
                }
                None => {
                    rollout.pause(
                        now_ms,
                        format!("route {} is gone or has no weighted targets", rollout.route),
                    );
                    None
                }
            };
            if &rollout == held {
                return Err(RolloutError::Unchanged);
            }
            driven = Some(rollout.clone());
            change((mesh, state), rollout, targets)
        })?;
        Ok(driven.expect("set by the stored change"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::state::meta::Identity;
    use crate::state::rollout::{BUCKETS_MS, Phase};

    fn shipped() -> Mesh {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
        Mesh::load_dir(&dir).expect("the shipped mesh loads")
    }

    fn weights(store: &Store) -> Vec<(String, i64)> {
        let s = store.current();
        let mesh = &s.mesh("gophermesh").expect("the shipped mesh").mesh;
        let route = find_route(mesh, Some("distributor"), "distributor").expect("the route");
        let (_, targets) = route.value.spec.weighted_targets().expect("weighted");
        targets
            .iter()
            .map(|t| (t.virtual_node.clone(), t.weight))
            .collect()
    }

    fn healthy(responses: u64) -> Counts {
        Counts {
            responses,
            errors_5xx: 0,
            buckets: BUCKETS_MS.iter().map(|_| responses).collect(),
        }
    }

    const ROUTE: RouteRef<'static> = RouteRef {
        mesh: None,
        router: None,
        route: "distributor",
    };

    fn plan() -> Plan {
        Plan {
            steps: vec![20, 100],
            interval_ms: 1_000,
            min_requests: 5,
            ..Plan::default()
        }
    }

    /// A rollout is stored with its route: it survives a reopen of the database, one look
    /// of its driver moves the route, and a second replica waits for the lease.
    #[test]
    fn a_rollout_is_stored_with_its_route_and_driven_by_one_replica() {
        let dir = std::env::temp_dir().join(format!(
            "gophermesh-rollouts-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let path = dir.join("state.redb");
        let seed = || Ok::<_, std::convert::Infallible>(vec![shipped()]);
        let (store, _) = Store::open(&path, seed, Identity::default()).expect("opens");
        let (mesh, rollout) = store
            .start_rollout(ROUTE, "distributor-v2", (&plan(), None), 0)
            .expect("starts");
        assert_eq!(mesh, "gophermesh");
        assert_eq!(
            weights(&store),
            [
                ("distributor-v1".to_owned(), 80),
                ("distributor-v2".to_owned(), 20)
            ]
        );
        let second = store.start_rollout(ROUTE, "distributor-v2", (&plan(), None), 1);
        assert!(
            matches!(&second, Err(RolloutError::Conflict(m)) if m.contains("already has a rollout")),
            "{second:?}"
        );
        drop(store);

        let (store, _) = Store::open(&path, seed, Identity::default()).expect("reopens");
        let key = rollout.key();
        let held = store.current().mesh("gophermesh").expect("mesh").rollouts[&key].clone();
        assert_eq!(held, rollout, "the rollout survives as stored");
        let look = |who: &str, now: u64, n: u64| {
            store.drive_rollout(
                ("gophermesh", &key),
                who,
                (now, now + 15_000),
                Some(&healthy(n)),
            )
        };
        let first = look("a", 10, 0).expect("takes the lease, opens the window");
        assert_eq!(first.lease.as_ref().map(|l| l.holder.as_str()), Some("a"));
        assert!(
            matches!(look("b", 2_000, 50), Err(RolloutError::Unchanged)),
            "a holds it"
        );
        assert!(
            matches!(look("a", 500, 50), Err(RolloutError::Unchanged)),
            "too early"
        );
        let promoted = look("a", 2_000, 50).expect("promotes");
        assert_eq!(promoted.phase, Phase::Succeeded);
        assert_eq!(weights(&store), [("distributor-v2".to_owned(), 100)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A person's change to the route pauses the rollout; resume sets its step again;
    /// abort puts the route back as it was.
    #[test]
    fn another_hand_pauses_it_and_abort_puts_the_route_back() {
        let store = Store::in_memory([shipped()], Identity::default());
        let before = weights(&store);
        let (_, rollout) = store
            .start_rollout(ROUTE, "distributor-v2", (&plan(), None), 0)
            .expect("starts");
        let set = [("distributor-v1", 50), ("distributor-v2", 50)]
            .map(|(n, w)| (n.to_owned(), w))
            .into();
        store
            .set_weights(None, None, "distributor", &set)
            .expect("a person's change");
        let paused = store
            .drive_rollout(("gophermesh", &rollout.key()), "a", (10, 15_010), None)
            .expect("pauses");
        assert!(
            matches!(&paused.phase, Phase::Paused { reason } if reason.contains("another hand")),
            "{:?}",
            paused.phase
        );
        store
            .act_on_rollout(ROUTE, Action::Resume, 20)
            .expect("resumes");
        assert_eq!(weights(&store)[1], ("distributor-v2".to_owned(), 20));
        store
            .act_on_rollout(ROUTE, Action::Abort, 30)
            .expect("aborts");
        assert_eq!(weights(&store), before);
        let again = store.act_on_rollout(ROUTE, Action::Abort, 40);
        assert!(matches!(again, Err(RolloutError::Conflict(_))), "{again:?}");
        // A route deleted during a rollout: the rollout pauses, and can still be aborted
        // (nothing to put back), so that the route can have another once made again.
        store
            .start_rollout(ROUTE, "distributor-v2", (&plan(), None), 45)
            .expect("a new rollout");
        let key = Key::Route("distributor".into(), "distributor".into());
        store
            .update_with(|s| {
                let m = &s.mesh("gophermesh").expect("mesh").mesh;
                m.remove(&key).map(|m| Next::mesh("gophermesh", m))
            })
            .expect("the route deleted");
        let paused = store
            .drive_rollout(("gophermesh", &rollout.key()), "a", (46, 15_046), None)
            .expect("pauses");
        assert!(
            matches!(paused.phase, Phase::Paused { .. }),
            "{:?}",
            paused.phase
        );
        let (_, aborted) = store
            .act_on_rollout(ROUTE, Action::Abort, 47)
            .expect("aborts");
        assert_eq!(aborted.phase, Phase::Aborted);
        let unknown = store.start_rollout(
            RouteRef {
                route: "nope",
                ..ROUTE
            },
            "distributor-v2",
            (&plan(), None),
            50,
        );
        assert!(
            matches!(unknown, Err(RolloutError::NotFound(_))),
            "{unknown:?}"
        );
    }

    /// An A/B stage: its route (the header added, ahead of the route) is there while it
    /// runs and the weights stay; once it passes, the route goes and the steps begin.
    /// A header that is no header is refused naming `--header`.
    #[test]
    fn an_ab_stage_has_its_own_route_until_it_passes() {
        let store = Store::in_memory([shipped()], Identity::default());
        let before = weights(&store);
        let bad = store.start_rollout(ROUTE, "distributor-v2", (&plan(), Some("x canary")), 0);
        assert!(
            matches!(&bad, Err(RolloutError::Refused(r)) if r.flag == "--header"),
            "{bad:?}"
        );
        let (_, rollout) = store
            .start_rollout(
                ROUTE,
                "distributor-v2",
                (&plan(), Some("X-Canary=insider")),
                0,
            )
            .expect("starts");
        assert_eq!(weights(&store), before, "the weights stay");
        let ab = Key::Route("distributor".into(), "distributor-ab".into());
        let route = |store: &Store| {
            store
                .current()
                .mesh("gophermesh")
                .expect("mesh")
                .mesh
                .get(&ab)
                .map(|(_, r)| r)
        };
        let Some(Resource::Route(made)) = route(&store) else {
            panic!("no A/B route")
        };
        assert_eq!(made.spec.priority, Some(1000));
        let http = made.spec.http_route.as_ref().expect("http");
        assert_eq!(http.route_match.headers[0].name, "x-canary");
        assert_eq!(http.action.weighted_targets.len(), 1);
        assert_eq!(rollout.checked_route(), "distributor-ab");
        let key = rollout.key();
        let look = |now: u64, n: u64| {
            store.drive_rollout(
                ("gophermesh", &key),
                "a",
                (now, now + 15_000),
                Some(&healthy(n)),
            )
        };
        look(10, 0).expect("opens the window");
        let passed = look(2_000, 50).expect("passes the A/B stage");
        assert_eq!(passed.ab, None);
        assert!(route(&store).is_none(), "the A/B route is gone");
        assert_eq!(weights(&store)[1], ("distributor-v2".to_owned(), 20));
    }
}
