//! The org behind both listeners: records, schema, sessions, query cursors,
//! faults and counters, behind one lock. Every operation here is synchronous
//! and quick; the HTTP layer never holds the lock across an `.await`.
//! Sessions and queries are here; `writes` (the REST writes) and `records`
//! (what the handle does as a data load or a user would) are beside it.

mod records;
mod writes;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::DecodingKey;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::data::{self, LOCATOR_PREFIX, ORG_PREFIX, ObjectSchema, Row, Table, USER_PREFIX};
use super::faults::Faults;
use super::seed;
use super::soql::{self, Schemas, SoqlError, Target};
use super::{SalesforceSandboxOptions, SalesforceSandboxStats};

/// Salesforce keeps at most this many query cursors open per user; opening
/// one more closes the oldest, whose `nextRecordsUrl` then fails.
const MAX_OPEN_LOCATORS: usize = 10;
/// Length of the random part of access and refresh tokens.
const TOKEN_RANDOM_CHARACTERS: usize = 88;
/// The Id serial of the org itself.
const ORG_SERIAL: u64 = 1;
/// Serial of the integration user; seeded users follow it.
pub(crate) const INTEGRATION_USER_SERIAL: u64 = 1;

/// A query result kept for its `nextRecordsUrl` pages: the matching rows as
/// they were when the query ran (later writes replace rows, never mutate
/// them), rendered page by page.
#[derive(Debug)]
struct Snapshot {
    query: soql::Query,
    rows: Vec<Arc<Row>>,
    page_size: usize,
}

/// Refusals of a query or a cursor page.
#[derive(Debug)]
pub(crate) enum QueryFailure {
    Soql(SoqlError),
    InvalidLocator(String),
}

/// Everything the org holds.
pub(crate) struct Org {
    pub(crate) options: SalesforceSandboxOptions,
    /// The connected app's certificate, from `options.jwt_public_key_pem`.
    pub(crate) jwt_key: Option<DecodingKey>,
    pub(crate) login_url: String,
    pub(crate) instance_url: String,
    /// 18-char Id of the organization (`00D...`).
    pub(crate) org_id: String,
    /// 18-char Id of the user every session belongs to.
    pub(crate) integration_user_id: String,
    pub(crate) account_schema: ObjectSchema,
    pub(crate) user_schema: ObjectSchema,
    pub(crate) accounts: Table,
    pub(crate) users: Table,
    next_account_serial: u64,
    next_locator_serial: u64,
    /// Access tokens that still open a session.
    access_tokens: HashSet<String>,
    /// Refresh tokens that still work.
    refresh_tokens: HashSet<String>,
    /// Open cursors, oldest first.
    locators: VecDeque<(String, Arc<Snapshot>)>,
    pub(crate) faults: Faults,
    /// Today's `DailyApiRequests` consumption.
    pub(crate) api_usage: u64,
    pub(crate) stats: SalesforceSandboxStats,
}

impl Org {
    pub(crate) fn new(
        options: SalesforceSandboxOptions,
        jwt_key: Option<DecodingKey>,
        login_url: String,
        instance_url: String,
    ) -> Org {
        let mut users = Table::new();
        let integration_user_id = data::make_id(USER_PREFIX, INTEGRATION_USER_SERIAL);
        let mut integration_user = Row::new();
        integration_user.insert("Id".into(), json!(integration_user_id));
        integration_user.insert("Name".into(), json!("Integration User"));
        integration_user.insert("Email".into(), json!(options.username));
        integration_user.insert("Username".into(), json!(options.username));
        integration_user.insert("IsActive".into(), json!(true));
        users.insert(integration_user_id.clone(), Arc::new(integration_user));
        for user in seed::seeded_users() {
            let id = user["Id"]
                .as_str()
                .expect("seeded users have Ids")
                .to_owned();
            users.insert(id, Arc::new(user));
        }
        let refresh_tokens = options.refresh_tokens.iter().cloned().collect();
        Org {
            options,
            jwt_key,
            login_url,
            instance_url,
            org_id: data::make_id(ORG_PREFIX, ORG_SERIAL),
            integration_user_id,
            account_schema: data::account_schema(),
            user_schema: data::user_schema(),
            accounts: Table::new(),
            users,
            next_account_serial: 1,
            next_locator_serial: 1,
            access_tokens: HashSet::new(),
            refresh_tokens,
            locators: VecDeque::new(),
            faults: Faults::default(),
            api_usage: 0,
            stats: SalesforceSandboxStats::default(),
        }
    }

    // -- sessions ----------------------------------------------------------

    fn random_token(&self) -> String {
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(TOKEN_RANDOM_CHARACTERS)
            .map(char::from)
            .collect()
    }

    /// A new session, answered like the token endpoint does; a rotated
    /// `refresh_token` is handed out with it.
    pub(crate) fn issue_session(&mut self, refresh_token: Option<String>) -> Value {
        let access_token = format!("{}!AR{}", &self.org_id[..15], self.random_token());
        self.access_tokens.insert(access_token.clone());
        let issued_at = chrono::Utc::now().timestamp_millis().to_string();
        let id = format!(
            "{}/id/{}/{}",
            self.login_url, self.org_id, self.integration_user_id
        );
        // Salesforce signs `id + issued_at` with the consumer secret.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.options.client_secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(issued_at.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut answer = Map::new();
        answer.insert("access_token".into(), json!(access_token));
        if let Some(refresh_token) = refresh_token {
            answer.insert("refresh_token".into(), json!(refresh_token));
        }
        answer.insert("signature".into(), json!(signature));
        answer.insert("scope".into(), json!("api"));
        answer.insert("instance_url".into(), json!(self.instance_url));
        answer.insert("id".into(), json!(id));
        answer.insert("token_type".into(), json!("Bearer"));
        answer.insert("issued_at".into(), json!(issued_at));
        Value::Object(answer)
    }

    /// Uses a refresh token: `Some(new token to hand out)` when rotation is
    /// on, `Some(None)` when valid without rotation, `None` when refused.
    pub(crate) fn redeem_refresh_token(&mut self, token: &str) -> Option<Option<String>> {
        if !self.refresh_tokens.contains(token) {
            return None;
        }
        if !self.options.rotate_refresh_tokens {
            return Some(None);
        }
        self.refresh_tokens.remove(token);
        let fresh = format!("5Aep861{}", self.random_token());
        self.refresh_tokens.insert(fresh.clone());
        Some(Some(fresh))
    }

    pub(crate) fn session_is_valid(&self, token: &str) -> bool {
        self.access_tokens.contains(token)
    }

    pub(crate) fn expire_sessions(&mut self) {
        self.access_tokens.clear();
    }

    // -- queries -----------------------------------------------------------

    /// Runs a SOQL query and answers its first page; the rest of the result
    /// is kept as it is now (the rows are shared, not copied), for
    /// `nextRecordsUrl`.
    pub(crate) fn query(
        &mut self,
        text: &str,
        include_deleted: bool,
        page_size: usize,
    ) -> Result<Value, QueryFailure> {
        let schemas = Schemas {
            account: &self.account_schema,
            user: &self.user_schema,
        };
        let query = soql::compile(text, &schemas).map_err(QueryFailure::Soql)?;
        let table = match query.target {
            Target::Account => &self.accounts,
            Target::User => &self.users,
        };
        let matching = table
            .values()
            .filter(|row| include_deleted || row.get("IsDeleted") != Some(&Value::Bool(true)))
            .filter(|row| query.matches(row, &self.users))
            .cloned();
        let mut rows: Vec<Arc<Row>> = match query.limit {
            // Unsorted, the first matches in Id order are the answer: stop there
            // (`LIMIT 1` is how a field list or a condition gets validated).
            Some(limit) if !query.is_sorted() => matching.take(limit).collect(),
            _ => matching.collect(),
        };
        query.sort(&mut rows, &self.users);
        if let Some(limit) = query.limit {
            rows.truncate(limit);
        }
        let snapshot = Snapshot {
            query,
            rows,
            page_size,
        };
        if snapshot.rows.len() <= page_size {
            return Ok(self.page(&snapshot, 0, None));
        }
        // Locators look like 15-char Ids: `01gSb00000000001`.
        let locator = data::make_id(LOCATOR_PREFIX, self.next_locator_serial)[..15].to_owned();
        self.next_locator_serial += 1;
        let first_page = self.page(&snapshot, 0, Some(&locator));
        if self.locators.len() >= MAX_OPEN_LOCATORS {
            self.locators.pop_front();
        }
        self.locators.push_back((locator, Arc::new(snapshot)));
        Ok(first_page)
    }

    /// The page of `snapshot` starting at `offset`; `locator` names the
    /// cursor when there may be more.
    fn page(&self, snapshot: &Snapshot, offset: usize, locator: Option<&str>) -> Value {
        let total = snapshot.rows.len();
        let end = (offset + snapshot.page_size).min(total);
        let api_version = &self.options.api_version;
        let records: Vec<Value> = snapshot.rows[offset..end]
            .iter()
            .map(|row| snapshot.query.render(row, &self.users, api_version))
            .collect();
        let mut body = Map::new();
        body.insert("totalSize".into(), json!(total));
        body.insert("done".into(), json!(end == total));
        if let Some(locator) = locator.filter(|_| end < total) {
            body.insert(
                "nextRecordsUrl".into(),
                json!(format!(
                    "/services/data/v{api_version}/query/{locator}-{end}"
                )),
            );
        }
        body.insert("records".into(), Value::Array(records));
        Value::Object(body)
    }

    /// A follow-up page: `locator_and_offset` is the last segment of a
    /// `nextRecordsUrl` (`01gSb0000000001-2000`).
    pub(crate) fn query_more(&mut self, locator_and_offset: &str) -> Result<Value, QueryFailure> {
        let invalid = || {
            QueryFailure::InvalidLocator(format!(
                "invalid query locator: {locator_and_offset} (expired, closed, or never issued); \
                 run the query again"
            ))
        };
        let (locator, offset) = locator_and_offset.split_once('-').ok_or_else(invalid)?;
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        let snapshot = self
            .locators
            .iter()
            .find(|(id, _)| id == locator)
            .map(|(_, snapshot)| Arc::clone(snapshot))
            .ok_or_else(invalid)?;
        if offset > snapshot.rows.len() {
            return Err(invalid());
        }
        Ok(self.page(&snapshot, offset, Some(locator)))
    }

    pub(crate) fn expire_locators(&mut self) {
        self.locators.clear();
    }

    /// `GET /limits`: the part of it the sandbox tracks.
    pub(crate) fn limits(&self) -> Value {
        let max = self.options.daily_api_limit;
        json!({
            "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(self.api_usage)},
        })
    }
}

/// A write happened now: bump the modification stamps, recompute formulas.
fn touch(row: &mut Row) {
    let now = data::now_stamp();
    row.insert("LastModifiedDate".into(), json!(now));
    row.insert("SystemModstamp".into(), json!(now));
    data::apply_account_formulas(row);
}
