//! `export lattice --apply` and `--teardown`: the Lattice export's calls made through the
//! AWS CLI.
//!
//! `--apply` brings an account's Lattice resources to what the mesh says: what is missing is
//! created, what differs is updated (or, where Lattice cannot change it, named), and what an
//! earlier apply of this mesh made that the mesh no longer has is deleted. A second apply
//! makes no call that changes anything. `--teardown` deletes what applies of this mesh made.
//! A resource belongs to the mesh when it carries the tag [`LATTICE_MESH_TAG`] with the
//! mesh's name; one of the same name without it is refused, never taken over.
//!
//! The AWS CLI makes the calls, so its configuration applies (`AWS_PROFILE`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...), and the inputs are those `--out` writes.
//!
//! ```text
//! lattice_apply.rs  the AWS CLI, the Reconciler and its calls, apply and teardown
//! ensure            each step's resource made or brought to what the mesh says
//! delete            what the mesh no longer has, deleted in Lattice's order
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use super::lattice::{LATTICE_MESH_TAG, LatticeStep};

mod delete;
mod ensure;
use serde_json::{Value, json};

/// The AWS CLI, found on `PATH`.
#[derive(Debug)]
pub struct AwsCli {
    program: PathBuf,
}

/// A call the AWS CLI (or AWS behind it) refused.
#[derive(Debug)]
struct Refused {
    call: String,
    message: String,
}

impl Refused {
    fn not_found(&self) -> bool {
        self.message.contains("ResourceNotFoundException")
    }
}

impl AwsCli {
    /// The `aws` on `PATH`, or an error that says how to install it.
    pub fn find() -> Result<Self, Stopped> {
        crate::progress::on_path("aws")
            .map(|program| Self { program })
            .ok_or_else(|| Stopped {
                done: Vec::new(),
                reason: "the AWS CLI (`aws`) is not on PATH, and --apply and --teardown make their calls \
                         with it: install it (`pip install awscli`, or scripts/setup.sh puts it in \
                         .venv/bin)"
                    .to_owned(),
            })
    }

    /// `aws vpc-lattice CALL --cli-input-json INPUT`: the answer (null when there is none).
    fn call(&self, call: &str, input: &Value) -> Result<Value, Refused> {
        let refused = |message: String| Refused {
            call: call.to_owned(),
            message,
        };
        let output = Command::new(&self.program)
            .args(["vpc-lattice", call, "--cli-input-json"])
            .arg(input.to_string())
            .args(["--output", "json"])
            .env("AWS_PAGER", "")
            .output()
            .map_err(|e| refused(format!("{} did not run: {e}", self.program.display())))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(refused(if said.is_empty() {
                format!("the AWS CLI exited with {}", output.status)
            } else {
                said
            }));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| refused(format!("the AWS CLI's answer is not JSON ({e}): {text}")))
    }

    /// Every item of a list call (the AWS CLI follows `nextToken` itself).
    fn items(&self, call: &str, input: &Value) -> Result<Vec<Value>, Refused> {
        let answer = self.call(call, input)?;
        Ok(answer["items"].as_array().cloned().unwrap_or_default())
    }
}

/// Why an apply or a teardown stopped, with what it had changed by then.
#[derive(Debug, thiserror::Error)]
#[error("{reason}\n{}", changed(done))]
pub struct Stopped {
    reason: String,
    done: Vec<String>,
}

fn changed(done: &[String]) -> String {
    if done.is_empty() {
        return "nothing was changed before it".to_owned();
    }
    let mut out = "changed before it:".to_owned();
    for line in done {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out
}

/// How many resources an apply or a teardown created, updated, left alone and deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} unchanged, {} deleted",
            self.created, self.updated, self.unchanged, self.deleted
        )
    }
}

/// What a step makes, in words: `target group distributor-v1`, `rule canary of service
/// distributor-gophers-local`.
fn label(step: &LatticeStep) -> String {
    let name = str_of(&step.input["name"]);
    let service = str_of(&step.input["serviceIdentifier"]);
    let service = service
        .strip_prefix("@{svc-")
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(&service);
    match step.call {
        "create-service-network" => format!("service network {name}"),
        "create-target-group" => format!("target group {name}"),
        "create-service" => format!("service {name}"),
        "create-service-network-service-association" => {
            format!("association of service {service}")
        }
        "create-listener" => format!("listener {name} of service {service}"),
        "create-rule" => format!("rule {name} of service {service}"),
        other => format!("{other} {}", step.reference),
    }
}

/// Applies or tears down one mesh's Lattice resources, printing each change.
struct Reconciler<'a> {
    aws: &'a AwsCli,
    mesh: String,
    /// The id each step's reference stands for.
    ids: BTreeMap<String, String>,
    tally: Tally,
    done: Vec<String>,
    /// Tags already read, by ARN.
    tags: BTreeMap<String, BTreeMap<String, String>>,
    /// The account's service networks, target groups and services, by list call.
    lists: BTreeMap<&'static str, Vec<Value>>,
    /// The rules each existing listener kept, by listener id.
    rules: BTreeMap<String, Vec<Value>>,
}

/// The kinds found by name among all of the account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Network,
    Group,
    Service,
}

impl Top {
    /// Its list call, its get call and the get call's identifier field.
    fn calls(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Network => (
                "list-service-networks",
                "get-service-network",
                "serviceNetworkIdentifier",
            ),
            Self::Group => (
                "list-target-groups",
                "get-target-group",
                "targetGroupIdentifier",
            ),
            Self::Service => ("list-services", "get-service", "serviceIdentifier"),
        }
    }

    fn update(self) -> &'static str {
        match self {
            Self::Network => "update-service-network",
            Self::Group => "update-target-group",
            Self::Service => "update-service",
        }
    }
}

impl<'a> Reconciler<'a> {
    fn new(aws: &'a AwsCli, mesh: &str) -> Self {
        Self {
            aws,
            mesh: mesh.to_owned(),
            ids: BTreeMap::new(),
            tally: Tally::default(),
            done: Vec::new(),
            tags: BTreeMap::new(),
            lists: BTreeMap::new(),
            rules: BTreeMap::new(),
        }
    }

    fn stop(&self, reason: impl Into<String>) -> Stopped {
        Stopped {
            reason: reason.into(),
            done: self.done.clone(),
        }
    }

    fn refused(&self, what: &str, r: Refused) -> Stopped {
        self.stop(format!(
            "{what}: aws vpc-lattice {} was refused: {}",
            r.call, r.message
        ))
    }

    fn call(&self, what: &str, call: &str, input: &Value) -> Result<Value, Stopped> {
        self.aws
            .call(call, input)
            .map_err(|r| self.refused(what, r))
    }

    fn items(&self, what: &str, call: &str, input: &Value) -> Result<Vec<Value>, Stopped> {
        self.aws
            .items(call, input)
            .map_err(|r| self.refused(what, r))
    }

    fn note(&mut self, verb: &str, what: &str, id: &str, why: &str) {
        let line = if why.is_empty() {
            format!("{verb} {what} ({id})")
        } else {
            format!("{verb} {what} ({id}): {why}")
        };
        println!("{line}");
        if verb != "unchanged" {
            self.done.push(line);
        }
    }

    /// Whether the resource at `arn` belongs to this mesh.
    fn ours(&mut self, what: &str, arn: &str) -> Result<bool, Stopped> {
        if !self.tags.contains_key(arn) {
            let answer = self.call(
                what,
                "list-tags-for-resource",
                &json!({ "resourceArn": arn }),
            )?;
            let tags = answer["tags"]
                .as_object()
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            self.tags.insert(arn.to_owned(), tags);
        }
        Ok(self.tags[arn].get(LATTICE_MESH_TAG) == Some(&self.mesh))
    }

    /// The items of `list` (with `input`) that belong to this mesh.
    fn owned(&mut self, what: &str, list: &str, input: &Value) -> Result<Vec<Value>, Stopped> {
        let mut mine = Vec::new();
        for item in self.items(what, list, input)? {
            let arn = item["arn"].as_str().unwrap_or_default().to_owned();
            if self.ours(what, &arn)? {
                mine.push(item);
            }
        }
        Ok(mine)
    }

    /// The existing resource named as `input` says among `items`, if this mesh's; one of
    /// another owner stops the apply.
    fn named(
        &mut self,
        what: &str,
        items: &[Value],
        input: &Value,
    ) -> Result<Option<Value>, Stopped> {
        let Some(found) = items.iter().find(|i| i["name"] == input["name"]) else {
            return Ok(None);
        };
        let arn = found["arn"].as_str().unwrap_or_default().to_owned();
        if !self.ours(what, &arn)? {
            return Err(self.stop(format!(
                "{what}: a Lattice resource of that name exists ({arn}) without the tag {LATTICE_MESH_TAG}={}; \
                 it is not this mesh's, so it is left alone: rename or delete it",
                self.mesh
            )));
        }
        Ok(Some(found.clone()))
    }

    fn create(&mut self, what: &str, step: &LatticeStep, input: &Value) -> Result<String, Stopped> {
        let answer = self.call(what, step.call, input)?;
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        self.tally.created += 1;
        self.note("created  ", what, &id, "");
        Ok(id)
    }

    /// Updates with `call` when `wanted` is not what `actual` holds; else counts it unchanged.
    fn update_if(
        &mut self,
        what: &str,
        id: &str,
        differs: Option<String>,
        call: &str,
        input: Value,
    ) -> Result<(), Stopped> {
        match differs {
            Some(field) => {
                self.call(what, call, &input)?;
                self.tally.updated += 1;
                self.note("updated  ", what, id, &format!("{field} differed"));
            }
            None => self.unchanged(what, id),
        }
        Ok(())
    }

    fn immutable(&self, what: &str, differs: Option<String>) -> Result<(), Stopped> {
        match differs {
            Some(field) => Err(self.stop(format!(
                "{what}: its {field} differs from the mesh's and Lattice cannot change it: \
                 `export lattice --teardown` and apply again (or delete it yourself)"
            ))),
            None => Ok(()),
        }
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The first place (a JSON path under `at`) where `actual` does not hold what `wanted` says.
/// Only what `wanted` names is compared: Lattice adds its own defaults to what it stores
/// (a header match's `caseSensitive`, a health check's matcher), and those are no change.
fn differs(wanted: &Value, actual: &Value, at: &str) -> Option<String> {
    match (wanted, actual) {
        (Value::Null, _) => None,
        (Value::Object(w), Value::Object(a)) => w
            .iter()
            .find_map(|(k, v)| differs(v, a.get(k).unwrap_or(&Value::Null), &format!("{at}.{k}"))),
        (Value::Array(w), Value::Array(a)) if w.len() == a.len() => w
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (w, a))| differs(w, a, &format!("{at}[{i}]"))),
        (Value::Number(w), Value::Number(a)) if w.as_f64() == a.as_f64() => None,
        (w, a) if w == a => None,
        _ => Some(at.to_owned()),
    }
}

/// `input` with each value that is `@{REF}` replaced by the id of the call named REF and
/// each that is `${VPC_ID}` by `vpc`. Whole values only: a name taken from the mesh that
/// holds such text is left as it is.
fn resolve(input: &Value, ids: &BTreeMap<String, String>, vpc: &str) -> Result<Value, String> {
    Ok(match input {
        Value::String(s) if s == "${VPC_ID}" => Value::String(vpc.to_owned()),
        Value::String(s) => match s.strip_prefix("@{").and_then(|r| r.strip_suffix('}')) {
            Some(reference) if !reference.contains(['{', '}']) => Value::String(
                ids.get(reference)
                    .cloned()
                    .ok_or_else(|| format!("@{{{reference}}} names no resource made before it"))?,
            ),
            _ => input.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, ids, vpc))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, ids, vpc)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Makes the account's Lattice resources what `steps` say, for the mesh `mesh`.
pub fn apply(aws: &AwsCli, mesh: &str, steps: &[LatticeStep], vpc: &str) -> Result<Tally, Stopped> {
    let mut r = Reconciler::new(aws, mesh);
    r.apply(steps, vpc)?;
    Ok(r.tally)
}

/// Deletes every Lattice resource that belongs to the mesh `mesh`.
pub fn teardown(aws: &AwsCli, mesh: &str) -> Result<Tally, Stopped> {
    let mut r = Reconciler::new(aws, mesh);
    r.delete_all_but(&BTreeSet::new())?;
    Ok(r.tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_wanted_is_compared() {
        let wanted = json!({"forward": {"targetGroups": [{"targetGroupIdentifier": "tg-1", "weight": 810}]}});
        let actual = json!({"forward": {"targetGroups": [{"targetGroupIdentifier": "tg-1", "weight": 810.0, "extra": 1}]}});
        assert_eq!(differs(&wanted, &actual, "defaultAction"), None);
        let moved = json!({"forward": {"targetGroups": [{"targetGroupIdentifier": "tg-1", "weight": 450}]}});
        assert_eq!(
            differs(&wanted, &moved, "defaultAction").as_deref(),
            Some("defaultAction.forward.targetGroups[0].weight")
        );
        let more = json!({"forward": {"targetGroups": [
            {"targetGroupIdentifier": "tg-1", "weight": 810},
            {"targetGroupIdentifier": "tg-2", "weight": 90}]}});
        assert_eq!(
            differs(&wanted, &more, "a").as_deref(),
            Some("a.forward.targetGroups")
        );
        assert_eq!(
            differs(&json!("NONE"), &Value::Null, "authType").as_deref(),
            Some("authType")
        );
    }

    #[test]
    fn references_become_ids_and_an_unknown_one_is_named() {
        let ids = BTreeMap::from([("svc-a".to_owned(), "svc-0123".to_owned())]);
        let input = json!({"serviceIdentifier": "@{svc-a}", "config": {"vpcIdentifier": "${VPC_ID}"}, "n": 3});
        assert_eq!(
            resolve(&input, &ids, "vpc-9").expect("resolves"),
            json!({"serviceIdentifier": "svc-0123", "config": {"vpcIdentifier": "vpc-9"}, "n": 3})
        );
        let err = resolve(&json!(["@{tg-x}"]), &ids, "vpc-9").expect_err("unknown");
        assert!(err.contains("@{tg-x}"), "{err}");
        // Names from the mesh are not substituted into, whatever they hold.
        let named = json!({"customDomainName": "a.${VPC_ID}.@{svc-a}", "tags": {"m": "@{svc-a}x"}});
        assert_eq!(resolve(&named, &ids, "vpc-9").expect("resolves"), named);
    }
}
