//! `ondorse-bridge preview --mapping NAME --account ID`: what the daemon
//! would send to Ondorse for one Account and write back at each moment,
//! computed by the same planner ([`crate::sync::plan`]). Reads only: one
//! describe, two queries, the store if the daemon does not hold it, and
//! the linked application from Ondorse if there is one.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::cli::access::operation_failure;
use crate::cli::{Cli, Failure};
use crate::config::Config;
use crate::mapping::{self, Mapping, Moment, WritebackContext};
use crate::ondorse::OndorseClient;
use crate::salesforce::model::{Record, SObjectDescribe};
use crate::salesforce::{Id, SalesforceClient};
use crate::store::{Link, Store, StoreError};
use crate::sync::{ACCOUNT, plan};
use crate::telemetry::Metrics;
use crate::text::suggestion;

/// Id of the stand-in application used when no real one is linked.
pub const SAMPLE_APPLICATION_ID: &str = "app_sample";

pub async fn preview(cli: &Cli, mapping_name: &str, account_id: &str) -> Result<(), Failure> {
    let config = cli.load_config()?;
    let mappings = mapping::load_dir(&config.mappings.dir)
        .map_err(|diagnostics| Failure::Invalid(diagnostics.to_string()))?;
    let Some(mapping) = mappings.get(mapping_name).cloned() else {
        let hint = suggestion(mapping_name, mappings.names())
            .map(|near| format!("did you mean `{near}`? "))
            .unwrap_or_default();
        let names: Vec<&str> = mappings.names().collect();
        return Err(Failure::Invalid(format!(
            "no mapping named `{mapping_name}` in {}; {hint}loaded: {}",
            config.mappings.dir.display(),
            names.join(", ")
        )));
    };
    let account_id =
        Id::parse_account(account_id).map_err(|error| operation_failure(error.into()))?;
    let account_id = account_id.as_str();
    // A command serves no `/metrics`: its calls count in a registry of its own.
    let salesforce = SalesforceClient::new(&config.salesforce, Metrics::new())
        .map_err(|error| Failure::Invalid(format!("{}: {error}", config.source.display())))?;
    let describe = salesforce
        .describe(ACCOUNT)
        .await
        .map_err(anyhow::Error::from)?;
    let (account, matches) = read_account(&salesforce, &mapping, account_id).await?;
    let stored = StoredLink::read(&config, &mapping.name, account_id).await;
    let output = render(&config, &mapping, &account, matches, &stored, &describe).await?;
    // The preview runs the file as written; what looks like a typo is said.
    for warning in mapping.warnings.iter() {
        eprintln!("{}", warning.as_warning());
    }
    print!("{output}");
    Ok(())
}

/// The Account with the mapping's fields, and whether it matches `select`.
async fn read_account(
    salesforce: &SalesforceClient,
    mapping: &Mapping,
    account_id: &str,
) -> Result<(Record, bool), Failure> {
    let ids = [account_id];
    let selected = first_record(salesforce, plan::accounts_queries(mapping, &ids)).await?;
    if let Some(account) = selected {
        return Ok((account, true));
    }
    match first_record(salesforce, plan::by_id_queries(mapping, &ids)).await? {
        Some(account) => Ok((account, false)),
        None => Err(Failure::Invalid(format!(
            "Salesforce has no {} {account_id} visible to the integration user",
            mapping.object
        ))),
    }
}

async fn first_record(
    salesforce: &SalesforceClient,
    queries: Vec<String>,
) -> Result<Option<Record>, Failure> {
    for soql in queries {
        let page = salesforce
            .query(soql)
            .next_page()
            .await
            .map_err(anyhow::Error::from)?;
        if let Some(record) = page.and_then(|records| records.into_iter().next()) {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// What the store knows of the Account, or why it was not asked.
enum StoredLink {
    Found(Box<Link>),
    None,
    Unavailable(String),
}

impl StoredLink {
    /// Opens the store only if it exists (a preview creates nothing) and
    /// the daemon does not hold it.
    async fn read(config: &Config, mapping: &str, account_id: &str) -> StoredLink {
        let store = match Store::open_existing(&config.store.path).await {
            Ok(store) => store,
            Err(StoreError::Missing { .. }) => return StoredLink::None,
            Err(StoreError::InUse { .. }) => {
                return StoredLink::Unavailable(
                    "the daemon holds the store, so its link to this Account is not read here"
                        .to_owned(),
                );
            }
            Err(error) => return StoredLink::Unavailable(error.to_string()),
        };
        match store.link(mapping, account_id) {
            Ok(Some(link)) => StoredLink::Found(Box::new(link)),
            Ok(None) => StoredLink::None,
            Err(error) => StoredLink::Unavailable(error.to_string()),
        }
    }
}

async fn render(
    config: &Config,
    mapping: &Mapping,
    account: &Record,
    matches: bool,
    stored: &StoredLink,
    describe: &SObjectDescribe,
) -> Result<String, Failure> {
    let account_id = account
        .get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let link = match stored {
        StoredLink::Found(link) => Some(link.as_ref()),
        _ => None,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mapping `{}` ({}), {} {account_id}",
        mapping.name,
        mapping.file.display(),
        mapping.object
    );
    let _ = writeln!(
        out,
        "{}",
        match (matches, link.and_then(|link| link.portal.as_ref())) {
            (_, Some(portal)) => format!(
                "already has portal {} (created {}); it gets no second one",
                portal.id,
                portal.created_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            (true, None) =>
                "matches `select`: the daemon creates its portal at the next poll".to_owned(),
            (false, None) =>
                "does NOT match `select`: the daemon would not create a portal for it".to_owned(),
        }
    );
    if let StoredLink::Unavailable(why) = stored {
        let _ = writeln!(out, "note: {why}");
    }

    let body = mapping
        .portal_body(account)
        .map_err(|error| Failure::Invalid(error.to_string()))?;
    let _ = writeln!(out, "\nPOST /api/portals");
    let _ = writeln!(out, "{}", pretty(&Value::Object(body)));

    let base = config.ondorse.portal_base_url.trim_end_matches('/');
    let sample_portal =
        json!({ "id": "portal_sample", "link": "sample", "url": format!("{base}/portals/sample") });
    let (portal, portal_source) = match link.and_then(|link| link.portal.as_ref()) {
        Some(portal) => (portal.answer.clone(), format!("portal {}", portal.id)),
        None => (sample_portal, "a sample portal".to_owned()),
    };
    let now = Utc::now();
    let (application, application_source) = application_of(config, link, now, &mut out).await;
    let collect = json!({ "link": "collect_sample", "url": format!("{base}/portals/collect_sample"), "at": now.to_rfc3339() });
    let known = plan::record_fields(account);
    for moment in Moment::ALL {
        if !mapping.writes_at(moment) {
            continue;
        }
        let with = match moment {
            Moment::PortalCreated => portal_source.clone(),
            Moment::Application => application_source.clone(),
            Moment::CollectOpened => format!("{application_source} and a sample collect"),
        };
        let context = WritebackContext {
            account,
            portal: Some(&portal),
            application: (moment != Moment::PortalCreated).then_some(&application),
            collect: (moment == Moment::CollectOpened).then_some(&collect),
            now,
        };
        let _ = writeln!(out, "\n{moment} (with {with}):");
        match plan::plan_writeback(mapping, moment, Some(moment), &context, describe, &known) {
            Ok(planned) => {
                for (field, value) in &planned.changed {
                    let _ = writeln!(out, "  set {field} = {value}");
                }
                if !planned.unchanged.is_empty() {
                    let _ = writeln!(
                        out,
                        "  unchanged (not sent): {}",
                        planned.unchanged.join(", ")
                    );
                }
                for refused in &planned.refused {
                    let _ = writeln!(
                        out,
                        "  REFUSED {} ({}): {}",
                        refused.field, refused.code, refused.message
                    );
                }
                if planned.changed.is_empty()
                    && planned.unchanged.is_empty()
                    && planned.refused.is_empty()
                {
                    let _ = writeln!(out, "  nothing to write");
                }
            }
            Err(error) => {
                let _ = writeln!(out, "  CANNOT RENDER: {error}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\npreview only: nothing was sent to Ondorse and nothing was written to Salesforce"
    );
    Ok(out)
}

/// The linked application as Ondorse has it now, else a sample one.
async fn application_of(
    config: &Config,
    link: Option<&Link>,
    now: DateTime<Utc>,
    out: &mut String,
) -> (Value, String) {
    if let Some(application_id) = link.and_then(|link| link.application_id.as_deref()) {
        let fetched = match OndorseClient::new(&config.ondorse, Metrics::new()) {
            Ok(client) => client
                .get_application(application_id)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match fetched {
            Ok(application) => {
                return (
                    application.template_value(),
                    format!("application {application_id} as Ondorse has it now"),
                );
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "note: cannot read the linked application {application_id} ({error}); using a sample"
                );
            }
        }
    }
    (
        sample_application(now),
        format!("the sample application {SAMPLE_APPLICATION_ID}"),
    )
}

/// A decided application, as templates see one (`application.*`).
pub fn sample_application(now: DateTime<Utc>) -> Value {
    json!({
        "id": SAMPLE_APPLICATION_ID,
        "status_review": "approved",
        "status_execution": "done",
        "risk_level": 1,
        "risk_score": 42.5,
        "custom_fields": {},
        "updated_at": now.to_rfc3339(),
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
