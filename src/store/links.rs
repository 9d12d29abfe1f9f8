//! Links: one per (mapping, Account), from the durable intent recorded
//! before `POST /api/portals` to the portal, its application and what we
//! last wrote back. A link whose `portal` is `None` is a pending intent.
//!
//! Keyed `account_id \0 mapping`, so everything about one Account is one
//! prefix scan; a second keyspace maps application ids to link keys, in
//! buckets ([`APPLICATION_INDEX`]).
//!
//! An intent carries its portal request, rendered once ([`PortalRequest`]):
//! every attempt sends exactly those bytes, so a retry after a lost answer
//! never meets a "key reused with another body" refusal. The request is
//! dropped once the portal exists (it holds personal data).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::buckets::BucketMap;
use super::codec;
use super::link_index::replace_link;
use super::writebacks::{
    Fields, Urgency, WriteChanges, merge_write, remove_write, transaction_error,
};
use super::{APPLICATIONS_TREE, Store, StoreError};
use crate::salesforce::model::Record;

/// What the bridge knows about one Account in one mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub mapping: String,
    pub account_id: String,
    /// Sent as `Idempotency-Key` with every attempt of the portal POST, so a
    /// retry after a lost answer returns the first portal.
    pub idempotency_key: String,
    pub intent_at: DateTime<Utc>,
    /// The portal once Ondorse created it; `None` while the intent is pending.
    pub portal: Option<PortalRecord>,
    pub application_id: Option<String>,
    /// True once the application has a final decision (approved/rejected):
    /// reconcile stops re-fetching it.
    #[serde(default)]
    pub decision_final: bool,
    /// A collect (documents requested) is open: the latest collect event
    /// was `collect.opened`. While it is and the decision is not final, a
    /// refresh of the application, however late, leaves the fields that
    /// moment wrote ([`crate::sync::plan::reached`]). Changed only through
    /// [`Link::apply_collect`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collect_opened: bool,
    /// When Ondorse raised the collect event `collect_opened` follows:
    /// an event raised earlier (delivered late, out of order) changes
    /// nothing. `None` for links stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_changed_at: Option<DateTime<Utc>>,
    /// The Account as last read from Salesforce (the mapping's query fields),
    /// for templates rendered later (decisions) and for change detection.
    pub account: Record,
    /// Portal creation attempts that failed, and the last failure.
    #[serde(default)]
    pub portal_attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The portal request, frozen when the intent was made; `None` once the
    /// portal exists (and for intents stored before requests were frozen,
    /// until their next attempt freezes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<PortalRequest>,
    /// No portal attempt before this instant (a failed attempt parks the
    /// intent with a growing delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// Ondorse refused the request for good (nothing was created): no
    /// automatic attempt any more; `resync --account ID --new-intent`
    /// abandons it for a fresh intent once the data is fixed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The portal is recorded but its `on_portal_created` write-back is not
    /// planned yet (the portal is stored first, before anything that can
    /// fail); reconcile plans it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub portal_writeback_due: bool,
    /// The Account is gone from Salesforce (deleted, or merged into an
    /// Account that has its own portal): nothing is planned, written or
    /// retried for this link any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<LinkClosure>,
}

/// Why and when a link was closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkClosure {
    /// In words, for `status` and `explain`.
    pub reason: String,
    pub at: DateTime<Utc>,
    /// The Account was deleted (not merged away): restoring it from the
    /// recycle bin reopens the link.
    pub deleted: bool,
}

/// What an Ondorse event says about the application's collect: opened
/// (documents requested) or closed (the applicant sent them, or submitted
/// again, and the case is back in review), and when Ondorse raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectChange {
    pub open: bool,
    pub at: DateTime<Utc>,
}

impl CollectChange {
    /// The later of two changes (the second on a tie: it was stored later).
    pub fn latest(
        first: Option<CollectChange>,
        second: Option<CollectChange>,
    ) -> Option<CollectChange> {
        match (first, second) {
            (Some(first), Some(second)) if first.at > second.at => Some(first),
            (first, None) => first,
            (_, second) => second,
        }
    }
}

impl Link {
    /// Follows `change` unless the link already follows a collect event
    /// raised later; whether it did.
    pub fn apply_collect(&mut self, change: CollectChange) -> bool {
        if self.collect_changed_at.is_some_and(|at| at > change.at) {
            return false;
        }
        self.collect_opened = change.open;
        self.collect_changed_at = Some(change.at);
        true
    }

    /// Whether work is still done on this link (it is not closed).
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// A pending intent that waits for an operator or for its retry time.
    pub fn is_parked(&self, at: DateTime<Utc>) -> bool {
        self.portal.is_none()
            && self.is_open()
            && (self.refused || self.retry_at.is_some_and(|retry| retry > at))
    }
}

/// The exact body of an intent's `POST /api/portals`, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortalRequest(String);

impl PortalRequest {
    /// Renders the body once; later attempts send [`PortalRequest::bytes`].
    pub fn freeze(body: &serde_json::Map<String, serde_json::Value>) -> PortalRequest {
        PortalRequest(serde_json::Value::Object(body.clone()).to_string())
    }

    /// The bytes every attempt sends.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The body as JSON, for the journal.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// What becomes of one link of an Account Salesforce says is gone
/// ([`Store::settle_gone_account`]).
#[derive(Debug, Clone, PartialEq)]
pub enum GoneLink {
    /// The link, closed (its `closed` set): the Account was deleted, or
    /// merged into one that has its own link for that mapping.
    Close(Link),
    /// The link, moved to the master Account it was merged into (its
    /// `account_id` is the master's, which had no link for that mapping).
    Move(Link),
}

/// The portal Ondorse answered, as templates see it (`portal.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalRecord {
    pub id: String,
    pub url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The whole answer, unknown fields included.
    pub answer: serde_json::Value,
}

/// The application index: application id → link key, one per link that
/// has an application, bucketed (`buckets.rs`) so the index does not add a
/// sled value per Account; 16,384 buckets keep a bucket to a few hundred
/// bytes at 100,000 applications.
pub(super) const APPLICATION_INDEX: BucketMap = BucketMap {
    keyspace: APPLICATIONS_TREE,
    buckets: 1 << 14,
};

/// The application index of a store written before buckets: one value per
/// application id.
pub(super) const LEGACY_APPLICATIONS_TREE: &str = "applications";

fn link_key(account_id: &str, mapping: &str) -> Vec<u8> {
    codec::composite_key(&[account_id, mapping])
}

impl Store {
    /// The link of `account_id` in `mapping`.
    pub fn link(&self, mapping: &str, account_id: &str) -> Result<Option<Link>, StoreError> {
        self.link_at(&link_key(account_id, mapping))
    }

    pub(super) fn link_at(&self, key: &[u8]) -> Result<Option<Link>, StoreError> {
        self.inner
            .links
            .get(key)
            .map_err(StoreError::database("read a link"))?
            .map(|bytes| self.decode_link(key, &bytes))
            .transpose()
    }

    /// Writes a link and, when it has one, its application index entry, in
    /// one transaction; durable at the next [`Store::flush`].
    pub fn put_link(&self, link: &Link) -> Result<(), StoreError> {
        self.put_link_and_queue(link, None, Urgency::Now, Utc::now())
    }

    /// Writes a link together with the write-back its new state calls for,
    /// in one transaction: a crash never keeps one without the other (a
    /// portal recorded whose link never reaches Salesforce, or a decision
    /// marked final whose fields were never queued).
    pub fn put_link_and_queue(
        &self,
        link: &Link,
        write: Option<&Fields>,
        urgency: Urgency,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = link_key(&link.account_id, &link.mapping);
        let inner = &self.inner;
        let changes = (
            &inner.links,
            &inner.link_states,
            &inner.link_counts,
            &inner.applications,
            &inner.writes,
        )
            .transaction(|(links, states, counts, applications, writes)| {
                replace_link(links, states, counts, &key, Some(link))?;
                if let Some(application_id) = &link.application_id {
                    APPLICATION_INDEX.insert_in(applications, application_id.as_bytes(), &key)?;
                }
                // Nothing is written to an Account whose link is closed.
                match write.filter(|fields| !fields.is_empty() && link.is_open()) {
                    Some(fields) => merge_write(
                        writes,
                        &link.account_id,
                        &link.mapping,
                        fields,
                        urgency,
                        now,
                    ),
                    None => {
                        Ok::<_, ConflictableTransactionError<StoreError>>(WriteChanges::default())
                    }
                }
            })
            .map_err(transaction_error("write a link"))?;
        self.apply_write_changes(changes)
    }

    /// Settles an Account Salesforce says is gone, in one transaction: each
    /// of its links is closed or moved to the master it was merged into (the
    /// application index follows, and the master is marked for re-planning
    /// so the link's fields are planned on it), and the Account's pending
    /// write is dropped. So a closed link is never seen with a write still
    /// queued for its Account. The caller holds the locks of every link
    /// involved (the loser's and the master's), taken in key order.
    pub fn settle_gone_account(
        &self,
        account_id: &str,
        changes: &[GoneLink],
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let dropped = (
            &inner.links,
            &inner.link_states,
            &inner.link_counts,
            &inner.applications,
            &inner.replans,
            &inner.writes,
        )
            .transaction(|(links, states, counts, applications, replans, writes)| {
                for change in changes {
                    match change {
                        GoneLink::Close(link) => {
                            let key = link_key(&link.account_id, &link.mapping);
                            replace_link(links, states, counts, &key, Some(link))?;
                        }
                        GoneLink::Move(moved) => {
                            let old_key = link_key(account_id, &moved.mapping);
                            let new_key = link_key(&moved.account_id, &moved.mapping);
                            replace_link(links, states, counts, &old_key, None)?;
                            replace_link(links, states, counts, &new_key, Some(moved))?;
                            if let Some(application_id) = &moved.application_id {
                                APPLICATION_INDEX.insert_in(
                                    applications,
                                    application_id.as_bytes(),
                                    &new_key,
                                )?;
                            }
                            super::dead_letters::mark_replan(
                                replans,
                                &moved.account_id,
                                std::slice::from_ref(&moved.mapping),
                            )?;
                        }
                    }
                }
                remove_write(writes, account_id.as_bytes())
            })
            .map_err(transaction_error("settle a gone Account"))?;
        self.apply_write_changes(dropped)
    }

    /// Writes a link reopened because its Account is back from the recycle
    /// bin, and marks the Account for re-planning, in one transaction: an
    /// open link is never left without the planning that fills its fields.
    pub fn put_reopened_link(&self, link: &Link) -> Result<(), StoreError> {
        let key = link_key(&link.account_id, &link.mapping);
        let inner = &self.inner;
        (
            &inner.links,
            &inner.link_states,
            &inner.link_counts,
            &inner.replans,
        )
            .transaction(|(links, states, counts, replans)| {
                replace_link(links, states, counts, &key, Some(link))?;
                super::dead_letters::mark_replan(
                    replans,
                    &link.account_id,
                    std::slice::from_ref(&link.mapping),
                )?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(transaction_error("reopen a link"))
    }

    /// The link an application belongs to, through the application index.
    pub fn link_by_application(&self, application_id: &str) -> Result<Option<Link>, StoreError> {
        let Some(key) =
            APPLICATION_INDEX.get(&self.inner.applications, application_id.as_bytes())?
        else {
            return Ok(None);
        };
        self.link_at(&key)
    }

    /// Every link of one Account (one per mapping that picked it up).
    pub fn links_of_account(&self, account_id: &str) -> Result<Vec<Link>, StoreError> {
        let mut prefix = account_id.as_bytes().to_vec();
        prefix.push(codec::KEY_SEPARATOR);
        self.inner
            .links
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(StoreError::database("read links"))?;
                self.decode_link(&key, &value)
            })
            .collect()
    }

    /// Every link, read one at a time as the iterator is advanced. For the
    /// demo's small sandbox org; the daemon's passes read the counts and the
    /// state index instead ([`Store::link_counts`], [`Store::links_in`]).
    pub fn links(&self) -> impl Iterator<Item = Result<Link, StoreError>> + '_ {
        self.inner.links.iter().map(|entry| {
            let (key, value) = entry.map_err(StoreError::database("read links"))?;
            self.decode_link(&key, &value)
        })
    }
}
