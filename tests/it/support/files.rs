//! Places in files, as diagnostics name them.

use std::path::Path;

/// `file:line:column` of the first `needle` in `path` (1-based, in characters).
pub fn position(path: &Path, needle: &str) -> String {
    let content = std::fs::read_to_string(path).expect("read the file");
    let offset = content
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {}", path.display()));
    let before = &content[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |newline| newline + 1)..]
        .chars()
        .count()
        + 1;
    format!("{}:{line}:{column}", path.display())
}
