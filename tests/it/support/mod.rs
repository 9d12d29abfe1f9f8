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

/// The store's sled database opened directly, as a store written by an
/// older version. sled lets go of its directory lock from its own threads a
/// moment after the last handle drops (`Store::open` waits for that; see
/// `store/release.rs`), so this waits for it too.
pub async fn raw_sled_after_release(path: &std::path::Path) -> sled::Db {
    let deadline = tokio::time::Instant::now() + crate::support::world::E2E_DEADLINE;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(error) => panic!("open {} with sled: {error}", path.display()),
        }
    }
}
