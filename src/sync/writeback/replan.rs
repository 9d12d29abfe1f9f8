//! Re-planning the Accounts whose dead letters were retried.

use serde_json::json;

use crate::mapping::Moment;
use crate::store::{Fields, Link};
use crate::sync::locks::link_key;
use crate::sync::{Engine, SyncError};

impl Engine {
    /// Plans again, from the current link and the application's current
    /// state, every Account whose dead letters were retried (`dead-letters
    /// retry`, online or offline), so a retried letter never puts an old
    /// value back. Returns how many Accounts were planned.
    pub async fn replan_marked(&self) -> Result<usize, SyncError> {
        let replans = self.store.replans()?;
        if replans.is_empty() {
            return Ok(0);
        }
        for replan in &replans {
            let account_id = &replan.account_id;
            for mapping in self.mappings().iter() {
                let application_id = {
                    // Read and rewritten under the link's lock: a decision,
                    // a merge or a close meanwhile is never overwritten with
                    // a stale copy, and a closed link is not planned.
                    let _link_lock = self
                        .link_locks
                        .lock(&link_key(&mapping.name, account_id))
                        .await;
                    let Some(link) = self
                        .store
                        .link(&mapping.name, account_id)?
                        .filter(Link::is_open)
                    else {
                        continue;
                    };
                    if link.portal.is_some() {
                        // The application's fields (once one is linked)
                        // come from its current state below.
                        let fields = self
                            .plan_moment(
                                mapping,
                                &link,
                                Moment::PortalCreated,
                                None,
                                None,
                                &Fields::new(),
                            )
                            .await?;
                        self.commit_link(&link, Moment::PortalCreated, fields)?;
                    }
                    link.application_id
                };
                // Takes the link's lock itself.
                if let Some(application_id) = &application_id {
                    self.refresh_application(application_id, None).await?;
                }
            }
            self.journal(
                account_id,
                None,
                "replanned",
                "dead letters retried: planned again from the current state".to_owned(),
                json!({ "mappings": replan.mappings }),
            )?;
            self.store.replanned(account_id)?;
        }
        self.store.flush().await?;
        self.writes_queued.notify_one();
        Ok(replans.len())
    }
}
