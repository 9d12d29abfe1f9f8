//! Where each key was set: `file:line:column` in the file, or the
//! environment variable that overrode it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{ConfigErrors, ENV_PREFIX, ENV_SEPARATOR};
use crate::text::Position;

/// Line and column (1-based) of every key in the file, for messages.
#[derive(Debug, Clone, Default)]
pub(super) struct Positions {
    pub(super) keys: HashMap<(String, String), Position>,
    pub(super) sections: HashMap<String, Position>,
}

impl Positions {
    pub(super) fn of(path: &Path, text: &str) -> Result<Positions, ConfigErrors> {
        let document = toml::de::DeTable::parse(text).map_err(|error| {
            let position = error.span().map_or(Position::START, |span| {
                Position::of_offset(text, span.start)
            });
            ConfigErrors {
                problems: vec![format!(
                    "{}:{position}: {}",
                    path.display(),
                    error.message().trim_end()
                )],
            }
        })?;
        let mut positions = Positions {
            keys: HashMap::new(),
            sections: HashMap::new(),
        };
        for (section, value) in document.get_ref() {
            let section_name = section.get_ref().to_string();
            // Point at the `[` of the header rather than at the name inside it.
            let start = section.span().start;
            let start = text[..start]
                .rfind('[')
                .filter(|bracket| text[*bracket + 1..start].trim().is_empty())
                .unwrap_or(start);
            positions
                .sections
                .insert(section_name.clone(), Position::of_offset(text, start));
            if let toml::de::DeValue::Table(table) = value.get_ref() {
                for (key, _) in table {
                    positions.keys.insert(
                        (section_name.clone(), key.get_ref().to_string()),
                        Position::of_offset(text, key.span().start),
                    );
                }
            }
        }
        Ok(positions)
    }
}

/// Where each key's value came from, so any later check can name it.
#[derive(Debug, Clone)]
pub struct Origins {
    pub(super) file: PathBuf,
    pub(super) positions: Positions,
    /// (section, key) pairs whose value came from an environment variable.
    pub(super) from_environment: HashSet<(String, String)>,
}

impl Origins {
    /// `file:line:column` of a key, or the environment variable that set it;
    /// the section's header, or the file, when the key is not written.
    pub fn of(&self, section: &str, key: &str) -> String {
        if self
            .from_environment
            .contains(&(section.to_owned(), key.to_owned()))
        {
            return format!(
                "environment {ENV_PREFIX}{ENV_SEPARATOR}{}{ENV_SEPARATOR}{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
        }
        let position = self
            .positions
            .keys
            .get(&(section.to_owned(), key.to_owned()))
            .or_else(|| self.positions.sections.get(section));
        match position {
            Some(position) => format!("{}:{position}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    pub(super) fn section(&self, section: &str) -> String {
        match self.positions.sections.get(section) {
            Some(position) => format!("{}:{position}", self.file.display()),
            None => format!(
                "environment {ENV_PREFIX}{ENV_SEPARATOR}{}{ENV_SEPARATOR}*",
                section.to_uppercase()
            ),
        }
    }
}
