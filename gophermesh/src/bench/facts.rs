//! Facts of the run that are not timings: the machine, and the images' sizes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::runtime::images;

/// Sizes of the images when podman has them.
pub(super) fn image_sizes() -> Value {
    let Ok(out) = std::process::Command::new("podman")
        .arg("--version")
        .output()
    else {
        return json!({"note": "podman is not installed; image sizes need `gophermesh images build`"});
    };
    if !out.status.success() {
        return json!({"note": "podman does not run here"});
    }
    let mut sizes = serde_json::Map::new();
    for image in images::IMAGES.iter().map(|i| i.name) {
        let size = images::image_size(image);
        sizes.insert(
            image.to_owned(),
            size.map_or(Value::Null, |b| json!((b / 1e6 * 100.0).round() / 100.0)),
        );
    }
    Value::Object(sizes)
}

pub(super) fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string()),
    );
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(model) = info.lines().find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        }) {
            m.insert("cpu".into(), model);
        }
    }
    m.insert(
        "date".into(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    );
    m
}
