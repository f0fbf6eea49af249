//! The ECS task metadata endpoint (v4): which task and availability zone this is.

use std::time::Duration;

use common::wire::TaskInfo;
use serde::Deserialize;

/// How long the metadata endpoint gets to answer.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
struct TaskMetadata {
    #[serde(rename = "TaskARN")]
    task_arn: String,
    #[serde(rename = "AvailabilityZone")]
    availability_zone: Option<String>,
}

/// Why the task metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("task metadata request to {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("task metadata at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("task metadata at {url} is not the expected JSON: {source}")]
    Body { url: String, source: reqwest::Error },
}

/// Reads `{base}/task` once, giving up after [`METADATA_TIMEOUT`].
pub async fn fetch(base: &str) -> Result<TaskInfo, MetadataError> {
    let url = format!("{}/task", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(METADATA_TIMEOUT)
        .build()
        .map_err(|source| MetadataError::Request {
            url: url.clone(),
            source,
        })?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|source| MetadataError::Request {
            url: url.clone(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(MetadataError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    let meta: TaskMetadata = response
        .json()
        .await
        .map_err(|source| MetadataError::Body { url, source })?;
    Ok(TaskInfo {
        task_arn: meta.task_arn,
        availability_zone: meta.availability_zone,
    })
}
