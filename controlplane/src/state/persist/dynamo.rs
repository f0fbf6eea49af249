//! The durable copy in a DynamoDB table, shared by replicas of the control plane.
//!
//! The table has one string partition key, `pk`. Each resource is one item (`pk` = the
//! resource's key, `record` = its [`Record`] as JSON), and one more item, `pk` =
//! `#version`, counts the changes stored so far. Every change is one `TransactWriteItems`
//! call whose first action moves `#version` from the number this replica last read or wrote
//! to the next, on that condition: when another replica got there first the whole
//! transaction is cancelled ([`PersistError::Conflict`]), nothing of it is stored, and the
//! caller reloads and makes its change again on top of the other's. So changes are never
//! lost nor interleaved, and each is checked against the whole mesh as it then was.
//!
//! The same transaction also writes the change itself to a log item (`#log/<version>`)
//! and drops the one [`RETAIN`] versions older. A replica that is behind reads the log
//! entries it missed and applies them in order, so catching up costs what changed, not the
//! whole table, however busy the others are. A replica that starts (or fell further behind
//! than the log reaches) reads `#version`, scans the table, reads `#version` again and
//! replays the log between the two: what the scan saw of changes that landed meanwhile is
//! overwritten by their log entries, so the result is exactly the state at the second
//! version. Replicas learn of each other's changes by reading `#version` (one small
//! consistent read, [`Watch`]).
//!
//! The AWS SDK is asynchronous while the store's writes are not (they run under the store's
//! lock, from API handlers and the CLI alike), so the SDK runs on a runtime of its own, on
//! its own thread, and a write waits for it (inside Tokio, through `block_in_place`).

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeyType, Put, ScalarAttributeType, TransactWriteItem, Update,
};

use super::{Loaded, PersistError, Record, StorageHealth, load_records};

/// The partition key of the table.
pub const KEY: &str = "pk";
/// The item that counts stored changes.
const VERSION_ITEM: &str = "#version";
/// Log items are `#log/` and the version, zero-padded.
const LOG_PREFIX: &str = "#log/";
/// How many log entries stay in the table.
pub const RETAIN: u64 = 1000;
/// A transaction holds at most 100 actions; three are the version's and the log's.
const MAX_ITEMS: usize = 97;

fn log_key(version: u64) -> String {
    format!("{LOG_PREFIX}{version:020}")
}

/// One stored change, as its log entry holds it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Change {
    puts: Vec<(String, Record)>,
    deletes: Vec<String>,
}

/// The records of the table as one replica knows them, by key, and their version.
type Records = std::collections::BTreeMap<String, Vec<u8>>;

/// The command that makes a table this store can use.
pub fn create_table_hint(name: &str) -> String {
    format!(
        "aws dynamodb create-table --table-name {name} --attribute-definitions AttributeName={KEY},AttributeType=S --key-schema AttributeName={KEY},KeyType=HASH --billing-mode PAY_PER_REQUEST"
    )
}

/// Makes table `name` as [`create_table_hint`] says, on a DynamoDB of one's own at
/// `endpoint` (such as moto's on loopback: region `us-east-1`, any credentials), and checks
/// it as a replica will.
pub async fn create_table_at(endpoint: &str, name: &str) -> Result<(), String> {
    use aws_sdk_dynamodb::config::{Credentials, Region};
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .http_client(crate::state::aws::https_client())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "local"))
        .build();
    let client = Client::from_conf(config);
    let key = KeySchemaElement::builder()
        .attribute_name(KEY)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| e.to_string())?;
    let attribute = AttributeDefinition::builder()
        .attribute_name(KEY)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(attribute)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| format!("cannot create table {name}: {}", said(&e)))?;
    check_schema(&client, name).await
}

/// Where record `key` goes in a seed written in parts (see [`Table::seed_in_parts`]): what
/// a resource refers to comes before it.
fn seed_rank(key: &str) -> u8 {
    let text = match key.strip_prefix('@') {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, k)| k),
        None => key,
    };
    match meshmodel::Key::from_text(text) {
        Some(meshmodel::Key::Mesh) => 0,
        Some(meshmodel::Key::VirtualNode(_)) => 1,
        Some(meshmodel::Key::VirtualRouter(_)) => 2,
        Some(meshmodel::Key::VirtualService(_)) => 3,
        Some(meshmodel::Key::Route(..)) => 4,
        Some(meshmodel::Key::VirtualGateway(_)) => 5,
        Some(meshmodel::Key::GatewayRoute(..)) => 6,
        None => 7,
    }
}

/// What DynamoDB (or the way to it) said, in one line.
fn said<E>(e: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    crate::state::aws::said(e, "DynamoDB")
}

/// A runtime of its own for the SDK, on a thread that lives as long as the process.
#[derive(Debug, Clone)]
struct Driver {
    handle: tokio::runtime::Handle,
}

impl Driver {
    fn start() -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dynamodb".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the DynamoDB runtime thread ended at start"))??;
        Ok(Self { handle })
    }

    /// Runs `future` on the SDK's runtime and waits for it.
    fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        let wait = move || {
            rx.recv()
                .expect("the DynamoDB runtime runs as long as the process")
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

/// What reads the table: the SDK client, its runtime and the table's name. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Watch {
    client: Client,
    driver: Driver,
    name: String,
}

impl Watch {
    fn error(&self, reason: impl std::fmt::Display) -> PersistError {
        PersistError::Dynamo {
            table: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// How many changes the table holds (a consistent read of one small item).
    pub fn version(&self) -> Result<u64, PersistError> {
        let (client, name) = (self.client.clone(), self.name.clone());
        self.driver
            .run(async move { read_version(&client, &name).await })
            .map_err(|e| self.error(e))
    }
}

async fn read_version(client: &Client, table: &str) -> Result<u64, String> {
    let out = client
        .get_item()
        .table_name(table)
        .key(KEY, AttributeValue::S(VERSION_ITEM.into()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| format!("cannot read the version: {}", said(&e)))?;
    match out.item().and_then(|i| i.get("version")) {
        None => Ok(0),
        Some(v) => v
            .as_n()
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("the item `{VERSION_ITEM}` has no numeric `version`")),
    }
}

/// The change stored as `version`, from its log entry; `None` once pruned.
async fn read_change(client: &Client, table: &str, version: u64) -> Result<Option<Change>, String> {
    let out = client
        .get_item()
        .table_name(table)
        .key(KEY, AttributeValue::S(log_key(version)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| format!("cannot read change {version}: {}", said(&e)))?;
    let Some(item) = out.item() else {
        return Ok(None);
    };
    let text = item
        .get("change")
        .and_then(|c| c.as_s().ok())
        .ok_or_else(|| format!("log entry {version} has no string `change`"))?;
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| format!("log entry {version} does not read: {e}"))
}

/// Applies the changes after `from` up to `to` to `records`; `false` when one of them is no
/// longer in the log.
async fn replay(
    client: &Client,
    table: &str,
    records: &mut Records,
    from: u64,
    to: u64,
) -> Result<bool, String> {
    for version in from + 1..=to {
        let Some(change) = read_change(client, table, version).await? else {
            return Ok(false);
        };
        for (key, record) in change.puts {
            let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            records.insert(key, bytes);
        }
        for key in change.deletes {
            records.remove(&key);
        }
    }
    Ok(true)
}

/// Every record (a scan, made exact by replaying the log entries of what landed during it),
/// with the version they are the state of.
async fn read_all(client: &Client, table: &str) -> Result<(u64, Records), String> {
    let before = read_version(client, table).await?;
    let mut records = Records::new();
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("cannot scan: {}", said(&e)))?;
        for item in page.items() {
            let Some(key) = item.get(KEY).and_then(|k| k.as_s().ok()) else {
                return Err(format!("an item has no string `{KEY}`"));
            };
            if key == VERSION_ITEM || key.starts_with(LOG_PREFIX) {
                continue;
            }
            let record = item
                .get("record")
                .and_then(|r| r.as_s().ok())
                .ok_or_else(|| format!("item `{key}` has no string `record`"))?;
            records.insert(key.clone(), record.as_bytes().to_vec());
        }
    }
    let after = read_version(client, table).await?;
    if !replay(client, table, &mut records, before, after).await? {
        return Err(format!(
            "more than {RETAIN} changes landed while reading it; try again"
        ));
    }
    Ok((after, records))
}

/// What is stored now, starting from `known` (the records at `version`): the log entries
/// since, or everything when the log no longer reaches back that far.
async fn catch_up(
    client: &Client,
    table: &str,
    mut known: Records,
    version: u64,
) -> Result<(u64, Records), String> {
    if version > 0 {
        let stored = read_version(client, table).await?;
        if stored >= version && replay(client, table, &mut known, version, stored).await? {
            return Ok((stored, known));
        }
    }
    read_all(client, table).await
}

/// The table as this replica's store.
#[derive(Debug)]
pub struct Table {
    watch: Watch,
    /// The version this replica last read or wrote.
    version: u64,
    /// The records at that version.
    records: Records,
    health: StorageHealth,
}

impl Table {
    /// Connects to table `name` with the SDK's usual configuration (credentials, region and
    /// `AWS_ENDPOINT_URL` from the environment, the instance or the task role), checks that
    /// it exists with the key this store uses, and reads everything in it.
    pub fn open(name: &str) -> Result<(Self, Loaded), PersistError> {
        let error = |reason: String| PersistError::Dynamo {
            table: name.to_owned(),
            reason,
        };
        let driver = Driver::start().map_err(|e| error(e.to_string()))?;
        let client = driver.run(async {
            let config = crate::state::aws::sdk_config().await;
            config.region().is_some().then(|| Client::new(&config))
        });
        let client = client.ok_or_else(|| {
            error("no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION)".into())
        })?;
        let watch = Watch {
            client,
            driver,
            name: name.to_owned(),
        };
        let (client, table) = (watch.client.clone(), name.to_owned());
        watch
            .driver
            .run(async move { check_schema(&client, &table).await })
            .map_err(error)?;
        let mut table = Self {
            watch,
            version: 0,
            records: Records::new(),
            health: StorageHealth::fresh(format!("dynamodb://{name}")),
        };
        let loaded = table.reload()?;
        Ok((table, loaded))
    }

    /// What reads the table, for watching it from elsewhere.
    pub fn watch(&self) -> Watch {
        self.watch.clone()
    }

    /// The version this replica last read or wrote.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How the table is doing, as this replica saw it.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }

    /// Everything in the table now (read as the changes since this replica's version);
    /// this replica's version becomes the table's.
    pub fn reload(&mut self) -> Result<Loaded, PersistError> {
        let (client, name) = (self.watch.client.clone(), self.watch.name.clone());
        // The SDK's runtime owns what it works on; this replica's records stay as they are
        // until the read succeeds.
        let (known, version) = (self.records.clone(), self.version);
        let (version, records) = self
            .watch
            .driver
            .run(async move { catch_up(&client, &name, known, version).await })
            .map_err(|e| self.watch.error(e))?;
        let source = format!("dynamodb://{}", self.watch.name);
        let listed = records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        let loaded = load_records(&source, listed).map_err(|p| {
            self.watch.error(format!(
                "what it holds does not load:\n  {}",
                p.0.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ))
        });
        // What was read is what is stored, whether or not it makes a mesh.
        self.version = version;
        self.records = records;
        loaded
    }

    /// Stores `puts` and removes `deletes` in one transaction on the condition that the
    /// table is still at this replica's version.
    pub fn write(
        &mut self,
        puts: &[(String, Record)],
        deletes: &[String],
    ) -> Result<(), PersistError> {
        let result = match self.version {
            // An empty table, seeded with more than one transaction holds.
            0 if puts.len() + deletes.len() > MAX_ITEMS => self.seed_in_parts(puts, deletes),
            _ => self.transact(puts, deletes),
        };
        self.health
            .note(&result, &format!("dynamodb://{}", self.watch.name));
        result
    }

    /// Seeds an empty table with more records than one transaction holds: in parts of
    /// [`MAX_ITEMS`], each a change of its own, in an order that keeps every part's mesh
    /// whole as it stands (the mesh, then its nodes, routers, services, routes, gateways
    /// and gateway routes, then the rest), so that a replica that starts meanwhile loads
    /// a mesh that checks out, and follows the log to the rest. The first part is written
    /// on the condition that the table is empty (another replica may have seeded it
    /// first: [`PersistError::Conflict`], as for any change); the others on top of what is
    /// there, read again if another replica wrote in between.
    fn seed_in_parts(
        &mut self,
        puts: &[(String, Record)],
        deletes: &[String],
    ) -> Result<(), PersistError> {
        let mut ordered: Vec<(String, Record)> = puts.to_vec();
        ordered.sort_by_key(|(key, _)| seed_rank(key));
        let mut parts = ordered.chunks(MAX_ITEMS);
        let first = parts.next().unwrap_or_default();
        self.transact(first, deletes)?;
        for part in parts {
            let mut lost = 0;
            loop {
                match self.transact(part, &[]) {
                    Err(PersistError::Conflict) if lost < 10 => {
                        lost += 1;
                        self.reload()?;
                    }
                    done => break done?,
                }
            }
        }
        Ok(())
    }

    fn transact(
        &mut self,
        puts: &[(String, Record)],
        deletes: &[String],
    ) -> Result<(), PersistError> {
        let items = puts.len() + deletes.len();
        if items > MAX_ITEMS {
            return Err(PersistError::TooLarge { items });
        }
        let table = &self.watch.name;
        let (expected, next) = (self.version, self.version + 1);
        let built = |e: aws_sdk_dynamodb::error::BuildError| self.watch.error(e);
        let mut actions = vec![
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(table)
                        .key(KEY, AttributeValue::S(VERSION_ITEM.into()))
                        .update_expression("SET #v = :next")
                        .condition_expression(match expected {
                            0 => "attribute_not_exists(#v) OR #v = :expected",
                            _ => "#v = :expected",
                        })
                        .expression_attribute_names("#v", "version")
                        .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
                        .expression_attribute_values(
                            ":expected",
                            AttributeValue::N(expected.to_string()),
                        )
                        .build()
                        .map_err(built)?,
                )
                .build(),
        ];
        for (key, record) in puts {
            let item = HashMap::from([
                (KEY.to_owned(), AttributeValue::S(key.clone())),
                (
                    "record".to_owned(),
                    AttributeValue::S(serde_json::to_string(record)?),
                ),
            ]);
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .build()
                .map_err(built)?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        for key in deletes {
            let delete = Delete::builder()
                .table_name(table)
                .key(KEY, AttributeValue::S(key.clone()))
                .build()
                .map_err(built)?;
            actions.push(TransactWriteItem::builder().delete(delete).build());
        }
        let change = Change {
            puts: puts.iter().map(|(k, r)| (k.clone(), r.clone())).collect(),
            deletes: deletes.to_vec(),
        };
        let log = Put::builder()
            .table_name(table)
            .item(KEY, AttributeValue::S(log_key(next)))
            .item("change", AttributeValue::S(serde_json::to_string(&change)?))
            .build()
            .map_err(built)?;
        actions.push(TransactWriteItem::builder().put(log).build());
        if next > RETAIN {
            let prune = Delete::builder()
                .table_name(table)
                .key(KEY, AttributeValue::S(log_key(next - RETAIN)))
                .build()
                .map_err(built)?;
            actions.push(TransactWriteItem::builder().delete(prune).build());
        }
        // The same token on every attempt (the SDK's own retries and ours below) makes the
        // transaction idempotent: DynamoDB applies it once and answers every repeat as it
        // answered the first.
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(100);
        let sent = loop {
            let (client, actions, token) =
                (self.watch.client.clone(), actions.clone(), token.clone());
            let sent = self.watch.driver.run(async move {
                client
                    .transact_write_items()
                    .set_transact_items(Some(actions))
                    .client_request_token(token)
                    .send()
                    .await
            });
            // When the store did not say whether it took the change (the answer was lost,
            // or it failed inside), it is asked again, the same transaction with the same
            // token, until it says, for up to FATE_BUDGET: what is answered is then what
            // happened.
            match &sent {
                Err(e) if fate_unknown(e) && started.elapsed() < FATE_BUDGET => {
                    tracing::warn!(table = %self.watch.name, "the store did not say whether it took a change ({}); asking again", said(e));
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) if fate_unknown(e) => {
                    return Err(PersistError::FateUnknown {
                        table: self.watch.name.clone(),
                        reason: said(e),
                    });
                }
                _ => break sent,
            }
        };
        match sent {
            Ok(_) => {
                self.version = next;
                for (key, record) in puts {
                    self.records
                        .insert(key.clone(), serde_json::to_vec(record)?);
                }
                for key in deletes {
                    self.records.remove(key);
                }
                Ok(())
            }
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c))
                    if c.cancellation_reasons().iter().any(|r| {
                        matches!(
                            r.code(),
                            Some("ConditionalCheckFailed" | "TransactionConflict")
                        )
                    }) =>
                {
                    tracing::debug!(expected, reasons = ?c.cancellation_reasons(), "the transaction was cancelled");
                    Err(PersistError::Conflict)
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                    Err(PersistError::Conflict)
                }
                _ => Err(self
                    .watch
                    .error(format!("cannot store the change: {}", said(&e)))),
            },
        }
    }
}

/// How long a change whose fate the store did not tell is asked about again.
pub const FATE_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Whether `e` leaves it open whether DynamoDB took the transaction: the request may have
/// reached it (a timeout, a connection lost, an answer that did not read, a failure inside
/// the service). A request that was never sent, or that DynamoDB refused, is no such error.
fn fate_unknown<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    match e {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() >= 500
                || matches!(e.code(), Some("InternalServerError" | "InternalFailure"))
        }
        // A connection that was never made sent nothing.
        _ => !never_connected(e),
    }
}

/// Whether `e` comes of a connection that could not be made (refused, no route, no such
/// host), so that no request was sent.
fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = at {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        at = error.source();
    }
    false
}

/// Refuses a table that is missing or keyed otherwise, saying how to make one.
async fn check_schema(client: &Client, table: &str) -> Result<(), String> {
    let described = client.describe_table().table_name(table).send().await;
    let out = match described {
        Ok(out) => out,
        Err(e) => {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                return Err(format!(
                    "it does not exist; create it with: {}",
                    create_table_hint(table)
                ));
            }
            return Err(format!("cannot describe it: {}", said(&e)));
        }
    };
    let Some(description) = out.table() else {
        return Err("DescribeTable returned no table".into());
    };
    let keyed_right = matches!(
        description.key_schema(),
        [k] if k.attribute_name() == KEY && *k.key_type() == KeyType::Hash
    ) && description
        .attribute_definitions()
        .iter()
        .any(|d| d.attribute_name() == KEY && *d.attribute_type() == ScalarAttributeType::S);
    if !keyed_right {
        return Err(format!(
            "its key must be one string partition key `{KEY}` (no sort key); make a table with: {}",
            create_table_hint(table)
        ));
    }
    Ok(())
}
