//! Shared test helpers: sandboxes, configuration files, the daemon, waiting on conditions.

pub mod config;
pub mod daemon;
pub mod ondorse;
pub mod salesforce;
pub mod salesforce_client;
pub mod world;

/// `file:line:column` (1-based, in characters) of the first `needle` in
/// `path`: how every message of the product names a place.
pub fn position(path: &std::path::Path, needle: &str) -> String {
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
