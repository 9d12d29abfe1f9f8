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
use crate::store::{Link, LinkClosure, LinkState};

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
    /// said): moves or closes its links and drops its pending write.
    /// `Fate::Alive` changes nothing.
    pub(super) async fn account_gone(
        &self,
        account_id: &str,
        answer: &str,
    ) -> Result<Fate, SyncError> {
        let fate = self.fate_of(account_id).await?;
        if fate == Fate::Alive {
            return Ok(fate);
        }
        self.store.forget_write(account_id)?;
        for link in self.store.links_of_account(account_id)? {
            match &fate {
                Fate::Merged(master) => {
                    self.move_to_master(&link.mapping, account_id, master, answer)
                        .await?;
                }
                Fate::Deleted | Fate::Missing => {
                    self.close_deleted(&link.mapping, account_id, &fate, answer)
                        .await?;
                }
                Fate::Alive => {}
            }
        }
        self.store.flush().await?;
        if let Fate::Merged(master) = &fate {
            // The master's mark is durable: a failure here is retried by reconcile.
            if let Err(error) = self.replan_marked().await {
                tracing::warn!(account_id, master = %master, %error, "the merged Account's write-back is not planned on its master yet; reconcile plans it");
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
                            self.store.put_link(&link)?;
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
    /// Account is seen again, and marks it for planning; the caller holds
    /// the link's lock and stores the link. False when it was not closed
    /// that way.
    pub(super) fn reopen(&self, link: &mut Link) -> Result<bool, SyncError> {
        if link.closed.take_if(|closed| closed.deleted).is_none() {
            return Ok(false);
        }
        self.store.mark_replan(&link.account_id, &link.mapping)?;
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
        Ok(
            match fields
                .get("MasterRecordId")
                .and_then(|master| master.as_str())
            {
                Some(master) if !master.is_empty() => Fate::Merged(master.to_owned()),
                _ => Fate::Deleted,
            },
        )
    }

    /// Moves one link of a merged-away Account to its master, or closes it
    /// when the master has its own link for that mapping.
    async fn move_to_master(
        &self,
        mapping: &str,
        loser: &str,
        master: &str,
        answer: &str,
    ) -> Result<(), SyncError> {
        let mut keys = [link_key(mapping, loser), link_key(mapping, master)];
        keys.sort();
        let _first = self.link_locks.lock(&keys[0]).await;
        let _second = if keys[0] == keys[1] {
            None
        } else {
            Some(self.link_locks.lock(&keys[1]).await)
        };
        let Some(link) = self.store.link(mapping, loser)?.filter(Link::is_open) else {
            return Ok(());
        };
        if self.store.link(mapping, master)?.is_some() {
            self.close(
                link,
                format!("merged into {master}, which has its own portal"),
                false,
                answer,
            )?;
            self.journal(
                master,
                Some(mapping),
                "merged_in",
                format!("Account {loser} was merged into this one, which keeps its own portal; {loser}'s link was closed"),
                json!({ "loser": loser }),
            )?;
            return Ok(());
        }
        let moved = self.store.move_link(&link, master)?;
        let portal = moved.portal.as_ref().map(|portal| portal.id.clone());
        self.journal(
            loser,
            Some(mapping),
            "merged",
            format!("merged into {master} (Salesforce answered {answer}): the link moved there"),
            json!({ "master": master, "portal": portal }),
        )?;
        self.journal(
            master,
            Some(mapping),
            "link_moved_here",
            format!("Account {loser} was merged into this one: its link moved here and its write-back is planned here"),
            json!({ "loser": loser, "portal": portal }),
        )?;
        tracing::warn!(
            account_id = loser,
            master,
            mapping,
            "merged Account: its link moved to the master"
        );
        Ok(())
    }

    /// Closes one link of a deleted Account.
    async fn close_deleted(
        &self,
        mapping: &str,
        account_id: &str,
        fate: &Fate,
        answer: &str,
    ) -> Result<(), SyncError> {
        let _link_lock = self.link_locks.lock(&link_key(mapping, account_id)).await;
        let Some(link) = self.store.link(mapping, account_id)?.filter(Link::is_open) else {
            return Ok(());
        };
        let reason = if *fate == Fate::Missing {
            "the Account no longer exists in Salesforce, not even in the recycle bin"
        } else {
            "the Account was deleted in Salesforce; restoring it from the recycle bin reopens the link"
        };
        self.close(link, reason.to_owned(), true, answer)
    }

    fn close(
        &self,
        mut link: Link,
        reason: String,
        deleted: bool,
        answer: &str,
    ) -> Result<(), SyncError> {
        tracing::warn!(account_id = %link.account_id, mapping = %link.mapping, %reason, "link closed");
        self.journal(
            &link.account_id,
            Some(&link.mapping),
            "link_closed",
            format!("link closed: {reason}"),
            json!({ "answer": answer }),
        )?;
        link.closed = Some(LinkClosure {
            reason,
            at: now(),
            deleted,
        });
        if !deleted {
            // Merged away: nothing is rendered for this link again, so the
            // Account's personal data it held goes (the journal keeps the
            // evidence).
            link.account.clear();
            link.request = None;
        }
        self.store.put_link(&link)?;
        Ok(())
    }
}
