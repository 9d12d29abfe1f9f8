//! The engine's only way to Salesforce: every call asks the API budget
//! governor first, naming its kind of work, then the breaker of its
//! endpoint, and reports how the endpoint answered.
//!
//! The raw [`SalesforceClient`] is a private field of [`GovernedSalesforce`]:
//! the rest of the engine cannot reach it, so no step can forget to ask.
//! The governor's own `GET /limits` and the client's token calls are the
//! only Salesforce calls made outside this wrapper. Every call here also
//! holds one of `[salesforce] max_concurrent_requests` permits while it is
//! in flight, so the engine's calls in flight never exceed it. Once the org
//! refuses a call for having too many long-running requests in flight
//! ([`SalesforceError::TooManyLongRequests`]), the permits drop to
//! [`ORG_LONG_REQUESTS`] for the rest of the run ([`CallSlots`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::SyncError;
use super::budget::{BudgetSettings, BudgetState, Governor, Paused, Work};
use super::clock::Clock;
use super::retry::{Breaker, Breakers, Endpoint};
use crate::mapping::online::{OrgReader, QueryRefusal};
use crate::salesforce::model::{Record, RecordOutcome, RecordUpdate, SObjectDescribe};
use crate::salesforce::{ORG_LONG_REQUESTS, QueryPages, SalesforceClient, SalesforceError};
use crate::telemetry::Metrics;

/// The Salesforce client behind the budget governor and the breakers.
pub struct GovernedSalesforce {
    client: SalesforceClient,
    governor: Governor,
    breakers: Arc<Breakers>,
    /// One permit per call in flight.
    slots: CallSlots,
}

impl std::fmt::Debug for GovernedSalesforce {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GovernedSalesforce")
            .field("client", &self.client)
            .field("governor", &self.governor)
            .finish_non_exhaustive()
    }
}

impl GovernedSalesforce {
    pub(super) fn new(
        client: SalesforceClient,
        budget: BudgetSettings,
        breakers: Arc<Breakers>,
        metrics: Metrics,
        max_concurrent_requests: usize,
    ) -> GovernedSalesforce {
        GovernedSalesforce {
            governor: Governor::new(client.clone(), budget, Clock::system(), metrics),
            client,
            breakers,
            slots: CallSlots::new(max_concurrent_requests),
        }
    }

    /// Calls that may start now without waiting for one in flight to end.
    pub fn free_call_slots(&self) -> usize {
        self.slots.free()
    }

    /// Asks the governor whether `work` may call Salesforce now, before a
    /// step that starts with calls (each call asks again).
    pub async fn may_run(&self, work: Work) -> Result<(), Paused> {
        self.governor.admit(work).await
    }

    /// What the API budget governor is doing (for `status`).
    pub fn budget_state(&self) -> BudgetState {
        self.governor.state()
    }

    /// The org's API host from the current token (no call).
    pub fn instance_url(&self) -> Option<String> {
        self.client.instance_url()
    }

    /// Why the last login was refused, while none succeeded since (no call).
    pub fn login_problem(&self) -> Option<crate::salesforce::LoginRefusal> {
        self.client.login_problem()
    }

    /// Why the configured API version cannot be used (no call).
    pub fn api_version_problem(&self) -> Option<String> {
        self.client.api_version_problem()
    }

    /// Makes sure the org serves the configured API version. Its
    /// `GET /services/data/` needs no session and counts against no
    /// allowance, so neither the governor nor a breaker is asked.
    pub async fn check_api_version(&self) -> Result<(), SalesforceError> {
        self.client.check_api_version().await
    }

    /// The describe of `sobject`, as `work`.
    pub async fn describe(&self, work: Work, sobject: &str) -> Result<SObjectDescribe, SyncError> {
        let (breaker, _permit) = self.admit(work, Endpoint::SalesforceQueries).await?;
        self.settle(
            breaker,
            self.client.describe(sobject).await,
            endpoint_failing,
        )
    }

    /// The rows matching `soql`, page by page; each page is a call and asks
    /// the governor and the breaker first.
    pub fn query(&self, work: Work, soql: impl Into<String>) -> GovernedPages<'_> {
        GovernedPages {
            owner: self,
            work,
            pages: self.client.query(soql),
        }
    }

    /// Like [`GovernedSalesforce::query`], deleted and merged-away rows
    /// included (`queryAll`).
    pub fn query_all(&self, work: Work, soql: impl Into<String>) -> GovernedPages<'_> {
        GovernedPages {
            owner: self,
            work,
            pages: self.client.query_all(soql),
        }
    }

    /// One sObject Collections update (the writer's call). Every failure of
    /// the call opens the write breaker: the writer waits as a whole.
    pub async fn update_records(
        &self,
        sobject: &str,
        records: &[RecordUpdate],
    ) -> Result<Vec<RecordOutcome>, SyncError> {
        let (breaker, _permit) = self
            .admit(Work::WriteBack, Endpoint::SalesforceWrites)
            .await?;
        self.settle(
            breaker,
            self.client.update_records(sobject, records).await,
            write_failing,
        )
    }

    /// One single-record update (the writer's fallback when collection
    /// answers are unreadable), on the same write breaker.
    pub async fn update_record(
        &self,
        sobject: &str,
        record: &RecordUpdate,
    ) -> Result<RecordOutcome, SyncError> {
        let (breaker, _permit) = self
            .admit(Work::WriteBack, Endpoint::SalesforceWrites)
            .await?;
        self.settle(
            breaker,
            self.client.update_record(sobject, record).await,
            write_failing,
        )
    }

    /// Reads for an online mapping check (reload), as [`Work::Check`].
    pub fn checker(&self) -> GovernedReader<'_> {
        GovernedReader { owner: self }
    }

    /// The governor's leave, a call slot (held until the permit is
    /// dropped), then the breaker's leave: a call that waited for its slot
    /// behind failures is asked after its wait, and takes the probe only
    /// when it really goes.
    async fn admit(
        &self,
        work: Work,
        endpoint: Endpoint,
    ) -> Result<(&Breaker, SemaphorePermit<'_>), SyncError> {
        self.governor.admit(work).await?;
        let permit = self.slots.acquire().await;
        let breaker = self.breakers.get(endpoint);
        breaker.admit()?;
        Ok((breaker, permit))
    }

    /// Reports a call's outcome to its endpoint's breaker, when `counts`
    /// says the failure is the endpoint's ([`write_failing`] for writes,
    /// [`endpoint_failing`] for reads).
    fn settle<T>(
        &self,
        breaker: &Breaker,
        answer: Result<T, SalesforceError>,
        counts: fn(&SalesforceError) -> bool,
    ) -> Result<T, SyncError> {
        match &answer {
            Ok(_) => breaker.record_success(),
            Err(error) if counts(error) => {
                self.notice_long_requests(error);
                breaker.record_failure(&error.to_string(), None);
            }
            Err(_) => {}
        }
        Ok(answer?)
    }

    /// The org refused a call for its long-running requests in flight: the
    /// engine keeps at most [`ORG_LONG_REQUESTS`] calls in flight from now on.
    fn notice_long_requests(&self, error: &SalesforceError) {
        if let SalesforceError::TooManyLongRequests { .. } = error
            && let Some(from) = self.slots.lower_to(ORG_LONG_REQUESTS)
        {
            tracing::warn!(
                from,
                to = ORG_LONG_REQUESTS,
                %error,
                "salesforce has too many long-running requests in flight for the org; the bridge now keeps at most {ORG_LONG_REQUESTS} calls in flight until it restarts; set salesforce.max_concurrent_requests = {ORG_LONG_REQUESTS} if the org's calls often run 20 s or more"
            );
        }
    }
}

/// The calls that may be in flight at once: `[salesforce]
/// max_concurrent_requests` permits, lowered for good when the org says it
/// has too many long-running requests. Permits held when the limit drops
/// are given back and forgotten one by one as their calls end, so the calls
/// in flight never exceed the lowered limit for longer than those calls.
struct CallSlots {
    permits: Semaphore,
    /// The current limit.
    limit: AtomicUsize,
    /// Permits still to forget as they come back, after a lowering.
    owed: AtomicUsize,
}

impl CallSlots {
    fn new(limit: usize) -> CallSlots {
        let limit = limit.max(1);
        CallSlots {
            permits: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            owed: AtomicUsize::new(0),
        }
    }

    /// A call slot, waiting for one if all are taken.
    async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            let permit = self
                .permits
                .acquire()
                .await
                .expect("the call slots are never closed");
            let owed = self
                .owed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                    owed.checked_sub(1)
                });
            if owed.is_err() {
                return permit;
            }
            // One more slot of the old limit paid back.
            permit.forget();
        }
    }

    /// Calls that may start now.
    fn free(&self) -> usize {
        self.permits
            .available_permits()
            .saturating_sub(self.owed.load(Ordering::SeqCst))
    }

    /// Lowers the limit to `limit`: the limit it had, if it was higher.
    fn lower_to(&self, limit: usize) -> Option<usize> {
        let previous = self.limit.fetch_min(limit, Ordering::SeqCst);
        if previous <= limit {
            return None;
        }
        let excess = previous - limit;
        let forgotten = self.permits.forget_permits(excess);
        self.owed.fetch_add(excess - forgotten, Ordering::SeqCst);
        Some(previous)
    }
}

/// Whether a write's `error` makes the writer wait: every failure of the
/// call, except the daily limit (the governor stops every call on its own).
fn write_failing(error: &SalesforceError) -> bool {
    !matches!(error, SalesforceError::RequestLimitExceeded { .. })
}

/// Whether `error` says the endpoint is unwell, rather than something about
/// this one request (a query Salesforce refuses, an expired locator) or the
/// daily allowance (the governor's business).
fn endpoint_failing(error: &SalesforceError) -> bool {
    match error {
        SalesforceError::Api { status, .. } => matches!(status, 401 | 403 | 500..),
        SalesforceError::RequestLimitExceeded { .. }
        // The configuration or the store is wrong, not the endpoint.
        | SalesforceError::ApiVersionNotOffered { .. }
        | SalesforceError::TokenNotKept { .. }
        | SalesforceError::InvalidQueryLocator { .. }
        | SalesforceError::TooManyRecords { .. }
        | SalesforceError::InvalidArgument { .. } => false,
        SalesforceError::Auth { .. }
        | SalesforceError::TooManyLongRequests { .. }
        | SalesforceError::TokenEndpoint { .. }
        | SalesforceError::Configuration(_)
        | SalesforceError::Server { .. }
        | SalesforceError::Transport { .. }
        | SalesforceError::Decode { .. }
        | SalesforceError::UnexpectedAnswer { .. } => true,
    }
}

/// A query read page by page through the governor.
pub struct GovernedPages<'a> {
    owner: &'a GovernedSalesforce,
    work: Work,
    pages: QueryPages,
}

impl GovernedPages<'_> {
    /// The next page, or `None` once the query is exhausted (no call then).
    /// After an error the position is kept, as [`QueryPages::next_page`].
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>, SyncError> {
        if self.pages.is_done() {
            return Ok(None);
        }
        let (breaker, _permit) = self
            .owner
            .admit(self.work, Endpoint::SalesforceQueries)
            .await?;
        self.owner
            .settle(breaker, self.pages.next_page().await, endpoint_failing)
    }
}

/// Online mapping checks through the governor ([`Work::Check`]).
pub struct GovernedReader<'a> {
    owner: &'a GovernedSalesforce,
}

impl OrgReader for GovernedReader<'_> {
    type Error = SyncError;

    async fn describe(&self, sobject: &str) -> Result<SObjectDescribe, SyncError> {
        self.owner.describe(Work::Check, sobject).await
    }

    async fn try_query(&self, soql: String) -> Result<Option<QueryRefusal>, SyncError> {
        match self.owner.query(Work::Check, soql).next_page().await {
            Ok(_) => Ok(None),
            Err(SyncError::Salesforce(error)) => Ok(QueryRefusal::of::<()>(Err(error))?),
            Err(error) => Err(error),
        }
    }

    async fn count(&self, soql: String) -> Result<u64, SyncError> {
        let mut pages = self.owner.query(Work::Check, soql);
        pages.next_page().await?;
        Ok(pages.pages.total_size().unwrap_or_default())
    }
}
