//! Accounts gone from Salesforce: merged into another one, or deleted.
//!
//! A write answered `ENTITY_IS_DELETED` (or `NOT_FOUND`, `MALFORMED_ID`) is
//! not a dead letter: the Account is looked up with `queryAll` (`IsDeleted`,
//! `MasterRecordId`).
//! - Merged away: each of its links moves to the surviving master Account,
//!   which is planned again so the link's fields reach it; when the master
//!   already has its own link for that mapping, the master's is kept and the
//!   loser's is closed (never two links on one Account). Both Accounts'
//!   journals say so. A move holds both links' locks, taken in key order.
//! - Deleted (or not even in the recycle bin any more): its links are
//!   closed with the reason, shown in `status`; nothing is planned, written
//!   or retried for them. Restored from the recycle bin, the Account is
//!   seen again by reconcile (which asks about every such link) or intake,
//!   and its links reopen and are planned again.

use serde_json::json;

use super::budget::Work;
use super::locks::link_key;
use super::{ACCOUNT, Engine, SyncError, now, plan};
use crate::salesforce::Id;
use crate::store::{GoneLink, Link, LinkClosure, LinkState};

/// What `queryAll` says became of an Account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fate {
    /// Still there: whatever was refused, the Account is not gone.
    Alive,
    /// Merged away into this surviving Account.
    Merged(String),
    /// In the recycle bin.
    Deleted,
    /// Not even in the recycle bin (emptied, or older than its 15 days).
    Missing,
}

impl Engine {
    /// Settles an Account Salesforce says is gone (`answer` is what it
    /// said): moves or closes its links and drops its pending write, in one
    /// store transaction under the locks of every link involved (taken in
    /// key order), so a closed link is never seen with a write queued.
    /// `Fate::Alive` changes nothing.
    pub(super) async fn account_gone(
        &self,
        account_id: &str,
        answer: &str,
    ) -> Result<Fate, SyncError> {
        let fate = self.fate_of(account_id).await?;
        let master = match &fate {
            Fate::Alive => return Ok(fate),
            Fate::Merged(master) => Some(master.as_str()),
            Fate::Deleted | Fate::Missing => None,
        };
        let mappings: Vec<String> = self
            .store
            .links_of_account(account_id)?
            .into_iter()
            .map(|link| link.mapping)
            .collect();
        let mut keys: Vec<String> = mappings
            .iter()
            .flat_map(|mapping| {
                std::iter::once(link_key(mapping, account_id))
                    .chain(master.map(|master| link_key(mapping, master)))
            })
            .collect();
        keys.sort();
        keys.dedup();
        let mut _link_locks = Vec::with_capacity(keys.len());
        for key in &keys {
            _link_locks.push(self.link_locks.lock(key).await);
        }
        // Read again under the locks: only these links are changed.
        let mut changes = Vec::new();
        for mapping in &mappings {
            let Some(link) = self.store.link(mapping, account_id)?.filter(Link::is_open) else {
                continue;
            };
            changes.push(match master {
                Some(master) if self.store.link(mapping, master)?.is_some() => GoneLink::Close(
                    closed(link, format!("merged into {master}, which has its own portal"), false),
                ),
                Some(master) => GoneLink::Move(Link {
                    account_id: master.to_owned(),
                    ..link
                }),
                None if fate == Fate::Missing => GoneLink::Close(closed(
                    link,
                    "the Account no longer exists in Salesforce, not even in the recycle bin"
                        .to_owned(),
                    true,
                )),
                None => GoneLink::Close(closed(
                    link,
                    "the Account was deleted in Salesforce; restoring it from the recycle bin reopens the link".to_owned(),
                    true,
                )),
            });
        }
        self.store.settle_gone_account(account_id, &changes)?;
        drop(_link_locks);
        for change in &changes {
            self.journal_gone(account_id, master, change, answer)?;
        }
        self.store.flush().await?;
        if let Some(master) = master {
            // The master's mark is durable: a failure here is retried by reconcile.
            if let Err(error) = self.replan_marked().await {
                tracing::warn!(account_id, master, %error, "the merged Account's write-back is not planned on its master yet; reconcile plans it");
            }
        }
        Ok(fate)
    }

    /// Reopens the links of deleted Accounts that are back (restored from
    /// the recycle bin), and plans them again. Returns how many reopened.
    pub(super) async fn reopen_restored(&self) -> Result<usize, SyncError> {
        let mut closed = Vec::new();
        for link in self.store.links_in(LinkState::Closed) {
            let link = link?;
            if link.closed.as_ref().is_some_and(|closed| closed.deleted) {
                closed.push(link);
            }
        }
        let ids: Vec<String> = closed.iter().map(|link| link.account_id.clone()).collect();
        let mut reopened = 0;
        // `query` (not `queryAll`) answers only the Accounts that are back.
        for soql in plan::fields_queries(ACCOUNT, ["IsDeleted"], &ids) {
            let mut pages = self.salesforce.query(Work::Reconcile, soql);
            while let Some(records) = pages.next_page().await? {
                for record in records {
                    let Some(account_id) = record.get("Id").and_then(|id| id.as_str()) else {
                        continue;
                    };
                    for link in closed.iter().filter(|link| link.account_id == account_id) {
                        let _link_lock = self
                            .link_locks
                            .lock(&link_key(&link.mapping, account_id))
                            .await;
                        if let Some(mut link) = self.store.link(&link.mapping, account_id)?
                            && self.reopen(&mut link)?
                        {
                            reopened += 1;
                        }
                    }
                }
            }
        }
        if reopened > 0 {
            self.store.flush().await?;
            self.replan_marked().await?;
        }
        Ok(reopened)
    }

    /// Reopens a link closed because its Account was deleted, now that the
    /// Account is seen again: the link is stored open and its Account marked
    /// for planning in one transaction. The caller holds the link's lock.
    /// False (nothing stored) when it was not closed that way.
    pub(super) fn reopen(&self, link: &mut Link) -> Result<bool, SyncError> {
        if link.closed.take_if(|closed| closed.deleted).is_none() {
            return Ok(false);
        }
        self.store.put_reopened_link(link)?;
        self.journal(
            &link.account_id,
            Some(&link.mapping),
            "link_reopened",
            "the Account is back from the recycle bin: the link is open again and its fields are planned again".to_owned(),
            json!({}),
        )?;
        tracing::info!(account_id = %link.account_id, mapping = %link.mapping, "restored Account: link reopened");
        Ok(true)
    }

    /// Looks the Account up in the recycle bin too.
    async fn fate_of(&self, account_id: &str) -> Result<Fate, SyncError> {
        let mut found = None;
        for soql in plan::fields_queries(ACCOUNT, ["IsDeleted", "MasterRecordId"], &[account_id]) {
            let mut pages = self.salesforce.query_all(Work::WriteBack, soql);
            while let Some(records) = pages.next_page().await? {
                found = records.iter().map(plan::record_fields).next().or(found);
            }
        }
        let Some(fields) = found else {
            return Ok(Fate::Missing);
        };
        if fields.get("IsDeleted") != Some(&json!(true)) {
            return Ok(Fate::Alive);
        }
        // The master's Id in its 18-character form, the one links are
        // keyed on; an empty or unreadable one merged into nothing we know.
        Ok(
            match fields
                .get("MasterRecordId")
                .and_then(|master| master.as_str())
                .map(Id::parse)
            {
                Some(Ok(master)) => Fate::Merged(master.into()),
                _ => Fate::Deleted,
            },
        )
    }

    /// Journals what became of one link of a gone Account, on it and on
    /// the master it was merged into.
    fn journal_gone(
        &self,
        loser: &str,
        master: Option<&str>,
        change: &GoneLink,
        answer: &str,
    ) -> Result<(), SyncError> {
        match change {
            GoneLink::Close(link) => {
                let reason = link
                    .closed
                    .as_ref()
                    .map_or("", |closed| closed.reason.as_str());
                tracing::warn!(account_id = loser, mapping = %link.mapping, %reason, "link closed");
                self.journal(
                    loser,
                    Some(&link.mapping),
                    "link_closed",
                    format!("link closed: {reason}"),
                    json!({ "answer": answer }),
                )?;
                if let Some(master) = master {
                    self.journal(
                        master,
                        Some(&link.mapping),
                        "merged_in",
                        format!("Account {loser} was merged into this one, which keeps its own portal; {loser}'s link was closed"),
                        json!({ "loser": loser }),
                    )?;
                }
            }
            GoneLink::Move(moved) => {
                let master = moved.account_id.as_str();
                let portal = moved.portal.as_ref().map(|portal| portal.id.clone());
                self.journal(
                    loser,
                    Some(&moved.mapping),
                    "merged",
                    format!(
                        "merged into {master} (Salesforce answered {answer}): the link moved there"
                    ),
                    json!({ "master": master, "portal": portal }),
                )?;
                self.journal(
                    master,
                    Some(&moved.mapping),
                    "link_moved_here",
                    format!("Account {loser} was merged into this one: its link moved here and its write-back is planned here"),
                    json!({ "loser": loser, "portal": portal }),
                )?;
                tracing::warn!(
                    account_id = loser,
                    master,
                    mapping = %moved.mapping,
                    "merged Account: its link moved to the master"
                );
            }
        }
        Ok(())
    }
}

/// The link closed for `reason`. A link merged away (not `deleted`) keeps
/// no personal data: nothing is rendered for it again (the journal keeps
/// the evidence).
fn closed(mut link: Link, reason: String, deleted: bool) -> Link {
    link.closed = Some(LinkClosure {
        reason,
        at: now(),
        deleted,
    });
    if !deleted {
        link.account.clear();
        link.request = None;
    }
    link
}
