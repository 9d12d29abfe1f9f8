//! Where log lines go and how they look: human-readable on a terminal (in
//! colour unless `NO_COLOR` is set), JSON lines under systemd, where
//! journald keeps them and tools parse them.

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;

/// Default log filter when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info";

/// Forces the format (`json` or `human`), e.g. for a container runtime that
/// collects JSON from a pipe.
pub const LOG_FORMAT_ENV: &str = "ONDORSE_BRIDGE_LOG_FORMAT";

/// How log events are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event for people; `ansi` adds colour.
    Human { ansi: bool },
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

impl LogFormat {
    /// The format for this process: [`LOG_FORMAT_ENV`] when set, JSON when
    /// stderr is the journal, else human (coloured on a terminal unless
    /// `NO_COLOR`). The second value is an unusable [`LOG_FORMAT_ENV`].
    pub fn detect() -> (LogFormat, Option<String>) {
        let requested = std::env::var(LOG_FORMAT_ENV).ok();
        // https://no-color.org: set and not empty.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        LogFormat::choose(
            requested.as_deref(),
            stderr_is_journal(),
            std::io::stderr().is_terminal(),
            no_color,
        )
    }

    fn choose(
        requested: Option<&str>,
        journal: bool,
        terminal: bool,
        no_color: bool,
    ) -> (LogFormat, Option<String>) {
        let human = LogFormat::Human {
            ansi: terminal && !no_color,
        };
        match requested.map(str::trim) {
            Some("json") => (LogFormat::Json, None),
            Some("human") => (human, None),
            Some("") | None => (if journal { LogFormat::Json } else { human }, None),
            Some(other) => (
                if journal { LogFormat::Json } else { human },
                Some(other.to_owned()),
            ),
        }
    }
}

/// Sets up the process's log output: human-readable on a terminal, JSON
/// lines when stderr is the systemd journal. `RUST_LOG` filters as usual.
/// Calling it again (tests, the demo) keeps the first setup.
pub fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let (format, unusable) = LogFormat::detect();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human { ansi } => builder.with_ansi(ansi).try_init(),
    };
    if installed.is_ok()
        && let Some(value) = unusable
    {
        tracing::warn!(
            variable = LOG_FORMAT_ENV,
            value,
            "unknown log format; expected json or human"
        );
    }
}

/// True when stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    is_journal_stream(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        std::io::stderr().as_fd(),
    )
}

/// True when `journal_stream` (`JOURNAL_STREAM`, `<device>:<inode>`) names
/// `stream`: a child process that inherited the variable but writes
/// elsewhere must not switch to JSON.
fn is_journal_stream(journal_stream: Option<&std::ffi::OsStr>, stream: BorrowedFd<'_>) -> bool {
    let Some((device, inode)) = journal_stream
        .and_then(|value| value.to_str())
        .and_then(|value| value.split_once(':'))
    else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    let Ok(descriptor) = stream.try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(descriptor)
        .metadata()
        .is_ok_and(|metadata| metadata.dev() == device && metadata.ino() == inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_gets_json_and_a_terminal_gets_colour() {
        let human = |ansi| (LogFormat::Human { ansi }, None);
        assert_eq!(
            LogFormat::choose(None, true, false, false),
            (LogFormat::Json, None)
        );
        assert_eq!(LogFormat::choose(None, false, true, false), human(true));
        assert_eq!(
            LogFormat::choose(None, false, true, true),
            human(false),
            "NO_COLOR"
        );
        assert_eq!(
            LogFormat::choose(None, false, false, false),
            human(false),
            "a pipe"
        );
        assert_eq!(
            LogFormat::choose(Some("json"), false, true, false),
            (LogFormat::Json, None)
        );
        assert_eq!(
            LogFormat::choose(Some("human"), true, false, false),
            human(false)
        );
        assert_eq!(
            LogFormat::choose(Some("xml"), true, false, false),
            (LogFormat::Json, Some("xml".to_owned()))
        );
    }

    #[test]
    fn the_journal_stream_must_name_the_very_stream() {
        let file = tempfile::tempfile().expect("a temp file");
        let metadata = file.metadata().expect("its metadata");
        let named = format!("{}:{}", metadata.dev(), metadata.ino());
        let other = format!("{}:{}", metadata.dev(), metadata.ino() + 1);
        let check =
            |value: Option<&str>| is_journal_stream(value.map(std::ffi::OsStr::new), file.as_fd());
        assert!(check(Some(&named)));
        assert!(!check(Some(&other)));
        assert!(!check(Some("garbage")));
        assert!(!check(None));
    }
}
