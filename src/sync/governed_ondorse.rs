//! The engine's only way to Ondorse: every call takes one of its endpoint's
//! call slots (`[ondorse] max_concurrent_requests` for portal POSTs,
//! `[ondorse] max_concurrent_reads` for application reads), then asks its
//! endpoint's breaker, then goes out, then tells the breaker how the
//! endpoint answered. Reads and POSTs have separate slots, so a decision's
//! read never waits behind a backfill's POSTs (nor a backfill behind
//! decisions).
//!
//! The order is the point: a call that waited for its slot while the calls
//! before it failed asks the breaker after its wait, so once the breaker
//! opens no waiting call goes out (only the breaker's probe does). The raw
//! [`OndorseClient`] is a private field of [`GovernedOndorse`], so no step
//! can call Ondorse without a slot or without asking. This is the Ondorse
//! side's counterpart of [`super::governed::GovernedSalesforce`] (Ondorse
//! has no API budget to govern).

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::SyncError;
use super::retry::{Breaker, Breakers, Endpoint};
use crate::ondorse::model::{Application, Portal};
use crate::ondorse::{OndorseClient, OndorseError};

/// The Ondorse client behind its call slots and the breakers.
pub struct GovernedOndorse {
    client: OndorseClient,
    breakers: Arc<Breakers>,
    /// One permit per portal POST in flight.
    portal_slots: Semaphore,
    /// One permit per application read in flight.
    read_slots: Semaphore,
}

impl std::fmt::Debug for GovernedOndorse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GovernedOndorse")
            .field("client", &self.client)
            .field("free_portal_slots", &self.portal_slots.available_permits())
            .field("free_read_slots", &self.read_slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl GovernedOndorse {
    pub(super) fn new(
        client: OndorseClient,
        breakers: Arc<Breakers>,
        max_concurrent_requests: usize,
        max_concurrent_reads: usize,
    ) -> GovernedOndorse {
        GovernedOndorse {
            client,
            breakers,
            portal_slots: Semaphore::new(max_concurrent_requests.max(1)),
            read_slots: Semaphore::new(max_concurrent_reads.max(1)),
        }
    }

    /// `POST /api/portals` with the intent's frozen bytes and its
    /// `Idempotency-Key`. An open breaker answers [`SyncError::Backoff`].
    pub async fn create_portal(
        &self,
        body: &[u8],
        idempotency_key: &str,
    ) -> Result<Portal, SyncError> {
        let (breaker, _slot) = self.admit(Endpoint::PortalCreation).await?;
        settle(
            breaker,
            self.client.create_portal(body, idempotency_key).await,
        )
    }

    /// `GET /api/applications/{id}`. An open breaker answers
    /// [`SyncError::Backoff`].
    pub async fn get_application(&self, id: &str) -> Result<Application, SyncError> {
        let (breaker, _slot) = self.admit(Endpoint::ApplicationFetch).await?;
        settle(breaker, self.client.get_application(id).await)
    }

    /// A call slot of the endpoint (held until the permit is dropped), then
    /// the breaker's leave: asked after the wait for the slot, so a call
    /// that waited behind failures does not go out once the breaker is open,
    /// and takes the probe only when it really goes.
    async fn admit(
        &self,
        endpoint: Endpoint,
    ) -> Result<(&Breaker, Option<SemaphorePermit<'_>>), SyncError> {
        let slots = match endpoint {
            Endpoint::ApplicationFetch => &self.read_slots,
            // Only the two Ondorse endpoints come through here.
            _ => &self.portal_slots,
        };
        // Never closed: this wrapper owns the semaphores.
        let slot = slots.acquire().await.ok();
        let breaker = self.breakers.get(endpoint);
        breaker.admit()?;
        Ok((breaker, slot))
    }
}

/// Reports an answer to the endpoint's breaker: a failure retrying can help
/// with (a 5xx, a timeout, a 429 with its `Retry-After`) makes the endpoint
/// wait as a whole; any other answer shows it is up.
fn settle<T>(breaker: &Breaker, answer: Result<T, OndorseError>) -> Result<T, SyncError> {
    match &answer {
        Err(error) if error.is_retriable() => {
            breaker.record_failure(&error.to_string(), error.retry_after());
        }
        _ => breaker.record_success(),
    }
    Ok(answer?)
}
