//! The `ondorse-bridge` binary: parse, set up logging, call the library.

use std::process::ExitCode;

use ondorse_bridge::telemetry;
use ondorse_bridge::{cli, memory};

fn main() -> ExitCode {
    // Before any thread exists, as the C allocator asks.
    memory::limit_arenas();
    cli::exit_quietly_when_output_closes();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    #[cfg(feature = "demo")]
    if matches!(cli.command, cli::Command::Demo(_)) && std::env::var_os("RUST_LOG").is_none() {
        // The demo prints its own progress; the daemon's info logs would bury
        // it. Set before any thread exists, so no one reads the environment
        // concurrently.
        // SAFETY: single-threaded at this point (the runtime starts below).
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    telemetry::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(cli::EXIT_RUNTIME);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            failure.exit_code()
        }
    }
}
