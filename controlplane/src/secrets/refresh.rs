//! Keeps the book filled with the ACM material the meshes name: fetched when a mesh first
//! names it, re-read every `every` (ACM renews a private certificate under the same ARN)
//! and before the served certificate expires, retried sooner after a failure. A failed
//! fetch keeps the last good secret; status says what failed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::Secrets;
use super::acm::{self, Fetch};
use super::mesh_ca::MeshCa;
use crate::state::snapshot::{Snapshot, node_key};
use crate::state::store::Store;
use crate::translate::{AcmMaterial, acm_material, callers_of, mesh_tls};

/// How long before a certificate expires it is fetched again at the latest.
pub const BEFORE_EXPIRY: Duration = Duration::from_secs(3600);

/// How soon a failed fetch is tried again, at most.
pub const RETRY: Duration = Duration::from_secs(15);

/// Every secret the meshes of `snapshot` name, with the nodes (`MESH/NODE`) that use it.
pub fn wanted(snapshot: &Snapshot) -> BTreeMap<String, (AcmMaterial, BTreeSet<String>)> {
    let mut all: BTreeMap<String, (AcmMaterial, BTreeSet<String>)> = BTreeMap::new();
    for (mesh, state) in &snapshot.meshes {
        for (name, (what, users)) in acm_material(&state.mesh) {
            let entry = all.entry(name).or_insert_with(|| (what, BTreeSet::new()));
            entry.1.extend(users.iter().map(|u| node_key(mesh, u)));
        }
    }
    all
}

/// For each trust secret: the certificates of the nodes its users call that none of its
/// authorities issued (by the issuer each certificate names), each told with both ARNs.
pub fn mismatches(snapshot: &Snapshot, secrets: &Secrets) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (mesh, state) in &snapshot.meshes {
        let material = acm_material(&state.mesh);
        for (cert_name, (what, servers)) in &material {
            let AcmMaterial::Certificate(arn) = what else {
                continue;
            };
            let Some(issuer) = secrets
                .certificates(cert_name)
                .and_then(|c| c.first().map(|i| i.issuer.clone()))
            else {
                continue;
            };
            for server in servers {
                for caller in callers_of(state, server).into_iter().flatten() {
                    let trusts = material.iter().filter(|(_, (w, users))| {
                        matches!(w, AcmMaterial::Trust(_)) && users.contains(caller)
                    });
                    for (trust_name, (trust, _)) in trusts {
                        let subjects: Vec<String> = secrets
                            .certificates(trust_name)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| c.subject)
                            .collect();
                        if subjects.is_empty() || subjects.contains(&issuer) {
                            continue;
                        }
                        let AcmMaterial::Trust(cas) = trust else {
                            continue;
                        };
                        out.entry(trust_name.clone()).or_default().push(format!(
                            "{mesh}/{caller} trusts {} but calls {mesh}/{server}, whose certificate {arn} was issued by `{issuer}`, which none of them is: those calls fail verification",
                            cas.join(", ")
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Fetches secret `name` once into `secrets`; when it should be fetched next.
pub async fn fetch_one(
    secrets: &Secrets,
    fetch: &dyn Fetch,
    name: &str,
    every: Duration,
) -> Duration {
    let Some(what) = secrets.what(name) else {
        return every;
    };
    let result = match &what {
        AcmMaterial::Certificate(arn) => match fetch.certificate(arn).await {
            Ok(exported) => acm::certificate_secret(name, arn, &exported),
            Err(e) => Err(e),
        },
        AcmMaterial::Trust(arns) => {
            let mut got = Vec::new();
            let mut failed = None;
            for arn in arns {
                match fetch.authority(arn).await {
                    Ok(a) => got.push((arn.clone(), a)),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => acm::trust_secret(name, &got),
            }
        }
    };
    let failed = result.is_err();
    if let Err(why) = &result {
        tracing::warn!(secret = name, error = %why, "cannot fetch a certificate; the last good one (if any) is kept");
    }
    secrets.fetched(name, result);
    if failed {
        return every.min(RETRY);
    }
    // Before the served certificate expires, at the latest.
    let end = secrets
        .certificates(name)
        .and_then(|c| c.first().and_then(acm::expires));
    match end.and_then(|e| e.duration_since(SystemTime::now()).ok()) {
        Some(left) if left > BEFORE_EXPIRY => every.min(left - BEFORE_EXPIRY),
        Some(_) => every.min(RETRY),
        None => every,
    }
}

/// When the mesh CAs are kept in the store: reads each mesh's (with mutual TLS of its
/// own) into `secrets`, and makes and stores one for a mesh that has none yet (the one
/// stored first wins, when replicas race).
async fn keep_mesh_cas(secrets: &Secrets, store: &Store, snapshot: &Snapshot) {
    let Some(seal) = secrets.seal() else { return };
    for (mesh, state) in &snapshot.meshes {
        if mesh_tls(&state.mesh).is_none() {
            continue;
        }
        let stored = match &state.mesh_ca {
            Some(stored) if secrets.has_ca(mesh, Some(&stored.certificate)) => continue,
            Some(stored) => stored.clone(),
            None if secrets.has_ca(mesh, None) => continue,
            None => {
                let made = MeshCa::generate(mesh).and_then(|ca| ca.sealed(&seal));
                let made = match made {
                    Ok(made) => made,
                    Err(e) => {
                        tracing::warn!(mesh, error = %e, "cannot make the mesh CA");
                        continue;
                    }
                };
                let (store, name) = (store.clone(), mesh.clone());
                match tokio::task::spawn_blocking(move || store.put_mesh_ca(&name, made)).await {
                    Ok(Ok(stored)) => stored,
                    Ok(Err(e)) => {
                        tracing::warn!(mesh, error = ?e, "cannot store the mesh CA");
                        continue;
                    }
                    Err(_) => continue,
                }
            }
        };
        if let Err(e) = MeshCa::unsealed(&stored, &seal).and_then(|ca| secrets.adopt_ca(mesh, ca)) {
            tracing::warn!(mesh, error = %e, "cannot use the stored mesh CA");
        }
    }
}

/// [`keep_mesh_cas`] over `store`'s current snapshot, for the unit tests.
#[cfg(test)]
pub(crate) async fn keep_mesh_cas_for_tests(secrets: &Secrets, store: &Store) {
    keep_mesh_cas(secrets, store, &store.current()).await;
}

/// Runs until `store` ends: keeps `secrets` filled from `fetch` (made the first time a
/// mesh names ACM material, so that a control plane without any never loads AWS
/// configuration), and the mesh CAs kept in the store read.
pub async fn run<F, Fut>(secrets: Secrets, store: Store, make_fetch: F, every: Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Box<dyn Fetch>>,
{
    let mut snapshots = store.subscribe();
    let mut make_fetch = Some(make_fetch);
    let mut fetch: Option<Box<dyn Fetch>> = None;
    let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        keep_mesh_cas(&secrets, &store, &snapshot).await;
        let wanted = wanted(&snapshot);
        due.retain(|name, _| wanted.contains_key(name));
        let now = tokio::time::Instant::now();
        for name in secrets.want(wanted) {
            due.insert(name, now);
        }
        if fetch.is_none() && !due.is_empty() {
            if let Some(make) = make_fetch.take() {
                fetch = Some(make().await);
            }
        }
        if let Some(f) = fetch.as_deref() {
            let now = tokio::time::Instant::now();
            let ready: Vec<String> = due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in ready {
                let next = fetch_one(&secrets, f, &name, every).await;
                due.insert(name, tokio::time::Instant::now() + next);
            }
        }
        secrets.warn(mismatches(&snapshot, &secrets));
        secrets.rotate_due();
        let rotation = secrets.next_rotation().map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let next = due
            .values()
            .min()
            .copied()
            .into_iter()
            .chain(rotation)
            .min();
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            () = secrets.first_issue() => {}
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
