//! Mapping files: what CRM admins edit (`mappings/README.md` is their manual).
//!
//! One YAML file per flow: which Accounts need KYC (`select`), the body of
//! their Ondorse portal (`portal`), and the Account fields written back at
//! each moment (`writeback`). Values are minijinja templates.
//!
//! - [`model`]: the format as serde types; also the JSON Schema source.
//! - `layout`: the YAML mistakes admins make most (a template or a `: `
//!   not quoted, a wrong indentation), each with what to write instead.
//! - [`parse`]: strict parsing with `file:line:column` diagnostics; the
//!   key check (`strict`) walks the file against the generated schema.
//! - [`template`]: evaluation; one expression keeps its type.
//! - [`condition`]: the syntax of `select` (a SOQL condition), offline.
//! - [`compiled`]: the checked [`Mapping`] the engine runs (pure).
//! - [`convert`]: values to Salesforce field types from describe.
//! - [`context`]: what templates read besides Account fields (`portal`,
//!   `application`, `collect`, `now`), and the offline check of each path.
//! - [`diagnostic`]: positions and problems.
//!
//! The schema is meant to sit next to the mapping files as
//! [`SCHEMA_FILE_NAME`] (`ondorse-bridge mappings schema > DIR/mapping.schema.json`);
//! each file names it in its first line,
//! `# yaml-language-server: $schema=./mapping.schema.json`, so editors with
//! the YAML language server complete and check keys as the admin types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::text::Position;

pub mod compiled;
pub mod condition;
pub mod context;
pub mod convert;
pub mod diagnostic;
mod layout;
pub mod model;
pub mod online;
pub mod parse;
mod strict;
pub mod template;

pub use compiled::{Mapping, Moment, RenderError, WritebackContext, WrittenField};
pub use convert::{ConversionError, convert_value};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::json_schema;
pub use parse::{MAX_MAPPING_FILE_BYTES, parse_mapping};

/// File name under which the JSON Schema is kept next to the mappings, as
/// the example files reference it.
pub const SCHEMA_FILE_NAME: &str = "mapping.schema.json";

/// Extensions of mapping files in the mapping directory.
const MAPPING_EXTENSIONS: [&str; 2] = ["yaml", "yml"];

/// Every mapping of a directory, by name; valid as a whole.
#[derive(Debug, Clone, Default)]
pub struct MappingSet {
    mappings: BTreeMap<String, Arc<Mapping>>,
}

impl MappingSet {
    /// The mappings, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Mapping>> {
        self.mappings.values()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Mapping>> {
        self.mappings.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    /// The mapping names, ordered.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.mappings.keys().map(String::as_str)
    }

    /// What is probably wrong in the files but does not stop them from
    /// loading, ordered by file and position.
    pub fn warnings(&self) -> Vec<&Diagnostic> {
        let mut warnings: Vec<&Diagnostic> = self
            .mappings
            .values()
            .flat_map(|mapping| mapping.warnings.iter())
            .collect();
        warnings.sort_by(|left, right| {
            (&left.file, left.line, left.column).cmp(&(&right.file, right.line, right.column))
        });
        warnings
    }

    /// Logs every warning, one event each: what the daemon does with a set
    /// it puts in force (at start and on reload).
    pub fn log_warnings(&self) {
        for warning in self.warnings() {
            tracing::warn!(problem = %warning.as_warning(), "the mapping runs as written");
        }
    }
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (sorted by file name) and
/// reports the problems of all files together: the set is usable only when
/// every file is.
pub fn load_dir(dir: &Path) -> Result<MappingSet, Diagnostics> {
    let files = mapping_files(dir)?;
    let mut diagnostics = Diagnostics::default();
    let mut mappings: BTreeMap<String, Arc<Mapping>> = BTreeMap::new();
    for path in files {
        let mapping = match read_mapping(&path) {
            Ok(mapping) => mapping,
            Err(problems) => {
                diagnostics.extend(problems);
                continue;
            }
        };
        if let Some(first) = mappings.get(&mapping.name) {
            diagnostics.push(Diagnostic::new(
                &path,
                mapping.name_position,
                format!(
                    "mapping name `{}` is already used by {}; names must be unique (rename one, or set `name:`)",
                    mapping.name,
                    first.file.display()
                ),
            ));
            continue;
        }
        mappings.insert(mapping.name.clone(), Arc::new(mapping));
    }
    diagnostics.into_result(MappingSet { mappings })
}

/// Reads one file, refusing an oversized one before reading it whole.
fn read_mapping(path: &Path) -> Result<Mapping, Diagnostics> {
    let unreadable = |error: std::io::Error| {
        Diagnostics::from(Diagnostic::whole(
            path,
            format!("cannot read mapping file {}: {error}", path.display()),
        ))
    };
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_MAPPING_FILE_BYTES as u64 {
        return Err(Diagnostic::new(
            path,
            Position::START,
            format!(
                "file is {size} bytes, over the {MAX_MAPPING_FILE_BYTES}-byte limit for a mapping file; is it really a mapping?"
            ),
        )
        .into());
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    parse_mapping(path, &text)
}

fn mapping_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostics> {
    let whole_dir = |message: String| Diagnostics::from(Diagnostic::whole(dir, message));
    let entries = std::fs::read_dir(dir).map_err(|error| {
        whole_dir(format!(
            "cannot read the mapping directory {}: {error}",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| {
                whole_dir(format!(
                    "cannot read the mapping directory {}: {error}",
                    dir.display()
                ))
            })?
            .path();
        let is_mapping = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| MAPPING_EXTENSIONS.contains(&extension));
        if is_mapping && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(whole_dir(format!(
            "no mapping files in {} (expected *.yaml)",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}
