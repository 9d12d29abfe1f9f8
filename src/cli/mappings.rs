//! `ondorse-bridge mappings schema`: the JSON Schema of the mapping format.
//!
//! Editors with the YAML language server (VS Code's YAML extension) use it
//! for completion and errors once it sits next to the mapping files:
//!
//! ```text
//! ondorse-bridge mappings schema > /etc/ondorse-bridge/mappings/mapping.schema.json
//! ```
//!
//! and each mapping file starts with
//! `# yaml-language-server: $schema=./mapping.schema.json`.

use clap::Subcommand;

use crate::cli::Failure;
use crate::mapping;

#[derive(Debug, Subcommand)]
pub enum MappingsCommand {
    /// Print the JSON Schema of mapping files (save it as mapping.schema.json next to them).
    Schema,
}

pub fn mappings(command: &MappingsCommand) -> Result<(), Failure> {
    match command {
        MappingsCommand::Schema => {
            let schema = serde_json::to_string_pretty(&mapping::json_schema())
                .map_err(|error| anyhow::Error::from(error).context("cannot print the schema"))?;
            println!("{schema}");
            Ok(())
        }
    }
}
