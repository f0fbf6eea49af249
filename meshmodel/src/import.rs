//! App Mesh as its users wrote it: a file told apart by its content and read into the
//! App Mesh API's resources.
//!
//! - App Mesh JSON, one resource per file as the AWS CLI sends it (or a directory of such
//!   files, as `mesh/`);
//! - a CloudFormation template, YAML or JSON (as written, or as `cdk synth` writes it):
//!   [`cfn`];
//! - Kubernetes manifests of the EKS controller's resources: [`k8s`].
//!
//! ```text
//! import.rs  what a file holds, and reading it
//! yaml       YAML documents as JSON, CloudFormation's short-form tags written out
//! cfn        templates evaluated
//! k8s        the controller's objects converted
//! ```

pub mod cfn;
pub mod k8s;
pub mod yaml;

use std::path::Path;

use crate::problem::{Problem, Problems};
use crate::resource::Resource;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    AppMeshJson,
    CloudFormation,
    Kubernetes,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::AppMeshJson => "App Mesh JSON",
            Format::CloudFormation => "a CloudFormation template",
            Format::Kubernetes => "Kubernetes manifests",
        })
    }
}

/// How files are read: a template's parameters, exports and pseudo parameters, and the
/// mesh of Kubernetes objects nothing else places.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// For templates; an empty `stack_name` is the file's name without its extension.
    pub cfn: cfn::Options,
    /// `--mesh`: the mesh of Kubernetes objects no `meshRef` or selector places.
    pub mesh: Option<String>,
}

/// A file's resources in the API's shapes, each with its origin; and a line for each
/// thing in it that is not applied (other resource types, other kinds).
#[derive(Debug, Clone)]
pub struct Imported {
    /// The file (or directory) read.
    pub origin: String,
    pub format: Format,
    pub resources: Vec<(String, Resource)>,
    pub not_applied: Vec<String>,
}

/// Reads `path` (a file, or a directory of App Mesh JSON files) as its content says.
pub fn read_path(path: &Path, options: &Options) -> Result<Imported, Problems> {
    let origin = path.display().to_string();
    if path.is_dir() {
        let mut resources = Vec::new();
        let mut problems = Vec::new();
        let files = crate::mesh::json_files(path)
            .map_err(|e| Problems::one(Problem::new(&origin, "", format!("cannot read: {e}"))))?;
        if files.is_empty() {
            return Err(Problems::one(Problem::new(
                &origin,
                "",
                "no *.json resource files here",
            )));
        }
        for file in files {
            let origin = file.display().to_string();
            match crate::input::read_text(&file, crate::input::MAX_FILE)
                .map_err(|e| Problems::one(Problem::new(&origin, "", format!("cannot read: {e}"))))
                .and_then(|text| Resource::parse(&origin, &text))
            {
                Ok(r) => resources.push((origin, r)),
                Err(Problems(mut p)) => problems.append(&mut p),
            }
        }
        return match problems.is_empty() {
            true => Ok(Imported {
                origin,
                format: Format::AppMeshJson,
                resources,
                not_applied: Vec::new(),
            }),
            false => Err(Problems(problems)),
        };
    }
    let text = crate::input::read_text(path, crate::input::MAX_FILE)
        .map_err(|e| Problems::one(Problem::new(&origin, "", format!("cannot read: {e}"))))?;
    let mut options = options.clone();
    if options.cfn.stack_name.is_empty() {
        options.cfn.stack_name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "stack".to_owned());
    }
    read_text(&origin, &text, &options)
}

/// Reads every one of `paths` ([`read_path`]): all of them, or every problem of any.
pub fn read_paths(
    paths: &[std::path::PathBuf],
    options: &Options,
) -> Result<Vec<Imported>, Problems> {
    let mut read = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match read_path(path, options) {
            Ok(imported) => read.push(imported),
            Err(Problems(mut p)) => problems.append(&mut p),
        }
    }
    match problems.is_empty() {
        true => Ok(read),
        false => Err(Problems(problems)),
    }
}

/// Reads `text` (from `origin`) as its content says: a template, manifests, or one App
/// Mesh resource.
pub fn read_text(origin: &str, text: &str, options: &Options) -> Result<Imported, Problems> {
    let documents = yaml::documents(origin, text)?;
    let Some(first) = documents.first() else {
        return Err(Problems::one(Problem::new(origin, "", "holds nothing")));
    };
    if documents.len() == 1 && cfn::is_template(first) {
        let evaluated = cfn::evaluate(origin, first, &options.cfn)?;
        return Ok(Imported {
            origin: origin.to_owned(),
            format: Format::CloudFormation,
            resources: evaluated.resources,
            not_applied: evaluated.not_applied,
        });
    }
    if documents.iter().all(k8s::is_manifest) {
        let converted = k8s::convert(origin, &documents, options.mesh.as_deref())?;
        return Ok(Imported {
            origin: origin.to_owned(),
            format: Format::Kubernetes,
            resources: converted.resources,
            not_applied: converted.skipped,
        });
    }
    if documents.len() == 1 {
        let resource = Resource::from_value(origin, first.clone())?;
        return Ok(Imported {
            origin: origin.to_owned(),
            format: Format::AppMeshJson,
            resources: vec![(origin.to_owned(), resource)],
            not_applied: Vec::new(),
        });
    }
    Err(Problems::one(Problem::new(
        origin,
        "",
        format!(
            "{} documents, not all Kubernetes objects: expected one App Mesh resource (JSON), a CloudFormation template, or Kubernetes manifests",
            documents.len()
        ),
    )))
}

#[cfg(test)]
mod tests;
