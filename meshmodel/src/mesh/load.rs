//! Reading a mesh directory: every `*.json` file below it, one resource each, checked as a
//! whole.

use crate::problem::{Problem, Problems};
use crate::resource::Resource;
use std::path::Path;

use crate::mesh::Mesh;

impl Mesh {
    /// Reads every `*.json` file below `dir` (sorted, recursively) as one resource each,
    /// and checks the result as one mesh. All problems found are returned together.
    pub fn load_dir(dir: &Path) -> Result<Self, Problems> {
        let (resources, mut problems) = read_resources(dir)?;
        let unparsed = !problems.is_empty();
        let mesh = assemble(resources, &mut problems);
        check_assembled(dir, &mesh, unparsed, &mut problems);
        match problems.is_empty() {
            true => Ok(mesh),
            false => Err(Problems(problems)),
        }
    }

    /// Reads every `*.json` file below `dir` as [`Mesh::load_dir`] does, into as many
    /// meshes as the resources' `meshName`s name (sorted by name), each checked as a
    /// whole. All problems found are returned together.
    pub fn load_meshes(dir: &Path) -> Result<Vec<Self>, Problems> {
        let (resources, mut problems) = read_resources(dir)?;
        let unparsed = !problems.is_empty();
        let mut meshes = Vec::new();
        for (_, resources) in by_mesh(resources) {
            let mesh = assemble(resources, &mut problems);
            if !unparsed {
                check_assembled(dir, &mesh, false, &mut problems);
            }
            meshes.push(mesh);
        }
        if unparsed {
            check_assembled(dir, &Mesh::default(), true, &mut problems);
        }
        match problems.is_empty() {
            true => Ok(meshes),
            false => Err(Problems(problems)),
        }
    }
}

/// `resources` by the mesh each names, sorted by mesh name.
fn by_mesh(
    resources: Vec<(String, Resource)>,
) -> std::collections::BTreeMap<String, Vec<(String, Resource)>> {
    let mut by_mesh: std::collections::BTreeMap<String, Vec<(String, Resource)>> =
        std::collections::BTreeMap::new();
    for (origin, resource) in resources {
        by_mesh
            .entry(resource.mesh_name().to_owned())
            .or_default()
            .push((origin, resource));
    }
    by_mesh
}

impl Mesh {
    /// The meshes `resources` make (as many as their `meshName`s name, sorted by name),
    /// each checked as a whole as a mesh directory is; `place` names where they came
    /// from in the problem of a mesh without its mesh resource.
    pub fn from_resources(
        place: &str,
        resources: Vec<(String, Resource)>,
    ) -> Result<Vec<Self>, Problems> {
        let mut problems = Vec::new();
        let mut meshes = Vec::new();
        for (name, resources) in by_mesh(resources) {
            let mesh = assemble(resources, &mut problems);
            let place = format!("{place} (mesh {name})");
            check_assembled(Path::new(&place), &mesh, false, &mut problems);
            meshes.push(mesh);
        }
        match problems.is_empty() {
            true => Ok(meshes),
            false => Err(Problems(problems)),
        }
    }
}

/// Resources as read, each with the file it came from.
type Read = Vec<(String, Resource)>;

/// Every resource file below `dir` parsed, with the problems of those that do not; an
/// error when the directory cannot be read or holds no `*.json` file.
fn read_resources(dir: &Path) -> Result<(Read, Vec<Problem>), Problems> {
    let mut files = Vec::new();
    collect_json(dir, &mut files).map_err(|e| {
        Problems::one(Problem::new(
            dir.display().to_string(),
            "",
            format!("cannot read: {e}"),
        ))
    })?;
    if files.is_empty() {
        return Err(Problems::one(Problem::new(
            dir.display().to_string(),
            "",
            "no *.json resource files here",
        )));
    }
    let mut problems = Vec::new();
    let mut resources = Vec::new();
    for file in files {
        let origin = file.display().to_string();
        match crate::input::read_text(&file, crate::input::MAX_FILE) {
            Err(e) => problems.push(Problem::new(&origin, "", format!("cannot read: {e}"))),
            Ok(text) => match Resource::parse(&origin, &text) {
                Ok(r) => resources.push((origin, r)),
                Err(Problems(mut p)) => problems.append(&mut p),
            },
        }
    }
    Ok((resources, problems))
}

/// One mesh of `resources`, a resource defined twice refused.
fn assemble(resources: Vec<(String, Resource)>, problems: &mut Vec<Problem>) -> Mesh {
    let mut mesh = Mesh::default();
    for (origin, resource) in resources {
        if let Some(previous) = mesh.origin_of(&resource) {
            problems.push(Problem::new(
                &origin,
                "",
                format!("{} is already defined in {previous}", resource.describe()),
            ));
            continue;
        }
        mesh.insert(origin, resource);
    }
    mesh
}

/// The checks of a mesh read from `dir`: it has its mesh resource, and (once every file
/// parses: a file that does not would make every reference to what it defines look
/// dangling) its references hold.
fn check_assembled(dir: &Path, mesh: &Mesh, unparsed: bool, problems: &mut Vec<Problem>) {
    if mesh.mesh.is_none() && problems.is_empty() {
        problems.push(Problem::new(
            dir.display().to_string(),
            "",
            "no mesh resource: add a mesh.json with {\"meshName\": \"...\"}",
        ));
    }
    if unparsed {
        problems.push(Problem::new(
            dir.display().to_string(),
            "",
            "references between resources are checked once every file above reads and parses",
        ));
    } else {
        problems.extend(mesh.check());
    }
}

/// Every `*.json` file below `dir`, sorted, recursively (links to directories are not
/// followed).
pub fn json_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    Ok(files)
}

pub(crate) fn collect_json(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
