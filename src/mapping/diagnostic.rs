//! Problems found in mapping files, each pointing at `file:line:column`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a mapping file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The start of a file, for problems that concern it as a whole.
    pub const START: Position = Position { line: 1, column: 1 };

    /// The position of byte `offset` in `text`. An offset past the end (or
    /// inside a character) is clamped to the nearest earlier boundary.
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.line, self.column)
    }
}

/// One problem in one mapping file. Displays as `file:line:column: message`,
/// the form editors and terminals turn into a link. A problem with no place
/// inside a file (an empty directory, an unreadable file) has line 0 and
/// displays as its message alone, which names the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, position: Position, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: position.line,
            column: position.column,
            message: message.into(),
        }
    }

    /// A problem with a whole file or directory rather than a place in it;
    /// `message` must name the path.
    pub fn whole(path: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    /// Displays as `file:line:column: warning: message`, for a problem
    /// that does not stop the file from loading.
    pub fn as_warning(&self) -> String {
        format!(
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }

    pub fn position(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return formatter.write_str(&self.message);
        }
        write!(
            formatter,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// Every problem found, in file order, so an admin fixes them in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when nothing was found, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Diagnostics {
        Diagnostics(vec![diagnostic])
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to a misspelt `word`, when it is close enough
/// to be a plausible typo.
pub fn suggestion<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Below this Jaro-Winkler similarity two names are more likely different
    // words than a typo of each other (`redirect_ur` vs `redirect_url` is 0.98,
    // `channel` vs `type` is 0.0).
    const MINIMUM_SIMILARITY: f64 = 0.8;
    let lowered = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let candidate_lowered = candidate.to_ascii_lowercase();
            let similarity = strsim::jaro_winkler(&lowered, &candidate_lowered);
            // Jaro-Winkler misses two swapped letters in a short word
            // (`ulr` for `url` is 0.6): one edit away is a typo too.
            let one_edit = strsim::osa_distance(&lowered, &candidate_lowered) <= 1;
            (similarity >= MINIMUM_SIMILARITY || one_edit).then_some((candidate, similarity))
        })
        .max_by(|left, right| left.1.total_cmp(&right.1))
        .map(|(candidate, _)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_not_bytes() {
        let text = "a: é\nbb: x";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 6),
            Position { line: 2, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 10),
            Position { line: 2, column: 5 }
        );
        // "é" is two bytes; the offset after it is column 5, not 6.
        assert_eq!(
            Position::of_offset(text, 5),
            Position { line: 1, column: 5 }
        );
    }

    #[test]
    fn suggestions_only_for_plausible_typos() {
        let keys = ["type", "redirect_url", "default_custom_fields"];
        assert_eq!(suggestion("redirect_ur", keys), Some("redirect_url"));
        assert_eq!(suggestion("Redirect_URL", keys), Some("redirect_url"));
        assert_eq!(
            suggestion("default_custom_field", keys),
            Some("default_custom_fields")
        );
        assert_eq!(suggestion("locale", keys), None);
    }
}
