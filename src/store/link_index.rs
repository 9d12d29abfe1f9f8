//! What `status`, reconcile and the gauges need to know about links,
//! without reading every link: per-mapping counts and an index of the links
//! in each state that calls for work.
//!
//! Both are maintained by [`replace_link`], the one place a link is written
//! or removed, inside the transaction that writes the link: they can never
//! disagree with the links after a crash. A store written before they
//! existed gets them built once, streaming over its links, when it opens.
//!
//! Every link the store decodes is counted ([`Store::links_read`]), so tests
//! can prove that a call over a large store reads only the links it needs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec;
use super::links::Link;
use super::{LINK_COUNTS_TREE, LINKS_TREE, Store, StoreError};

/// The key under which the counts tree records that it was built: present in
/// every store opened since the counts exist.
const BUILT_MARKER: &[u8] = b"\xffbuilt";

/// How many links of one mapping are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounts {
    /// Accounts the mapping picked up (links, open or closed).
    pub accounts: u64,
    pub portals: u64,
    pub applications: u64,
    pub final_decisions: u64,
    /// Open links whose portal is not created yet.
    pub pending_portals: u64,
    /// Links without a portal whose last creation attempt failed.
    pub failing_portals: u64,
    pub closed: u64,
}

impl LinkCounts {
    fn of(link: &Link) -> LinkCounts {
        let count = |condition: bool| u64::from(condition);
        LinkCounts {
            accounts: 1,
            portals: count(link.portal.is_some()),
            applications: count(link.application_id.is_some()),
            final_decisions: count(link.decision_final),
            pending_portals: count(link.portal.is_none() && link.is_open()),
            failing_portals: count(link.portal.is_none() && link.last_error.is_some()),
            closed: count(!link.is_open()),
        }
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) another link's counts.
    fn apply(&mut self, other: &LinkCounts, sign: i8) {
        let pairs = [
            (&mut self.accounts, other.accounts),
            (&mut self.portals, other.portals),
            (&mut self.applications, other.applications),
            (&mut self.final_decisions, other.final_decisions),
            (&mut self.pending_portals, other.pending_portals),
            (&mut self.failing_portals, other.failing_portals),
            (&mut self.closed, other.closed),
        ];
        for (total, value) in pairs {
            *total = if sign < 0 {
                total.saturating_sub(value)
            } else {
                *total + value
            };
        }
    }
}

/// A state of a link that some pass works off; a link is in the index of
/// every state it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Open, without a portal yet: an intent (due, parked or refused).
    PendingPortal,
    /// Open, with an application that has no final decision: reconcile
    /// re-fetches it.
    Undecided,
    /// Its `on_portal_created` write-back is not planned yet.
    PortalWritebackDue,
    /// Closed (its Account deleted or merged away).
    Closed,
}

impl LinkState {
    const ALL: [LinkState; 4] = [
        LinkState::PendingPortal,
        LinkState::Undecided,
        LinkState::PortalWritebackDue,
        LinkState::Closed,
    ];

    fn tag(self) -> &'static str {
        match self {
            LinkState::PendingPortal => "pending_portal",
            LinkState::Undecided => "undecided",
            LinkState::PortalWritebackDue => "portal_writeback_due",
            LinkState::Closed => "closed",
        }
    }

    fn holds(self, link: &Link) -> bool {
        match self {
            LinkState::PendingPortal => link.portal.is_none() && link.is_open(),
            LinkState::Undecided => {
                link.is_open() && link.application_id.is_some() && !link.decision_final
            }
            LinkState::PortalWritebackDue => link.portal_writeback_due,
            LinkState::Closed => !link.is_open(),
        }
    }

    /// `tag \0 link key`: one prefix scan per state, in link key order.
    fn key(self, link_key: &[u8]) -> Vec<u8> {
        let mut key = self.tag().as_bytes().to_vec();
        key.push(codec::KEY_SEPARATOR);
        key.extend_from_slice(link_key);
        key
    }
}

fn counts_key(mapping: &str) -> &[u8] {
    mapping.as_bytes()
}

/// Writes `new` under `key` (or removes what is there when `new` is `None`)
/// and keeps the counts and the state index in step, inside the caller's
/// transaction. The only way a link is written.
pub(super) fn replace_link(
    links: &TransactionalTree,
    states: &TransactionalTree,
    counts: &TransactionalTree,
    key: &[u8],
    new: Option<&Link>,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let abort = ConflictableTransactionError::Abort;
    let old = match new {
        Some(link) => {
            let value = codec::encode_value(LINKS_TREE, link).map_err(abort)?;
            links.insert(key, value)?
        }
        None => links.remove(key)?,
    };
    let old: Option<Link> = old
        .map(|bytes| codec::decode_value(LINKS_TREE, key, &bytes))
        .transpose()
        .map_err(abort)?;
    for state in LinkState::ALL {
        let was = old.as_ref().is_some_and(|link| state.holds(link));
        let is = new.is_some_and(|link| state.holds(link));
        if is && !was {
            states.insert(state.key(key), &[])?;
        } else if was && !is {
            states.remove(state.key(key))?;
        }
    }
    let change = |link: &Link, sign: i8| {
        let key = counts_key(&link.mapping);
        let mut total: LinkCounts = match counts.get(key)? {
            Some(bytes) => codec::decode_value(LINK_COUNTS_TREE, key, &bytes).map_err(abort)?,
            None => LinkCounts::default(),
        };
        total.apply(&LinkCounts::of(link), sign);
        let value = codec::encode_value(LINK_COUNTS_TREE, &total).map_err(abort)?;
        counts.insert(key, value)?;
        Ok::<_, ConflictableTransactionError<StoreError>>(())
    };
    if let Some(old) = &old {
        change(old, -1)?;
    }
    if let Some(new) = new {
        change(new, 1)?;
    }
    Ok(())
}

impl Store {
    /// Decodes a stored link; every link read goes through here.
    pub(super) fn decode_link(&self, key: &[u8], bytes: &[u8]) -> Result<Link, StoreError> {
        self.inner.links_read.fetch_add(1, Ordering::Relaxed);
        codec::decode_value(LINKS_TREE, key, bytes)
    }

    /// How many links this handle decoded since the store was opened: what
    /// a call over a large store read, for tests and diagnostics.
    pub fn links_read(&self) -> u64 {
        self.inner.links_read.load(Ordering::Relaxed)
    }

    /// Each mapping's link counts, by mapping name; read from counters, not
    /// from the links.
    pub fn link_counts(&self) -> Result<BTreeMap<String, LinkCounts>, StoreError> {
        let mut all = BTreeMap::new();
        for entry in self.inner.link_counts.iter() {
            let (key, value) = entry.map_err(StoreError::database("read the link counts"))?;
            if key.as_ref() == BUILT_MARKER {
                continue;
            }
            let counts = codec::decode_value(LINK_COUNTS_TREE, &key, &value)?;
            all.insert(String::from_utf8_lossy(&key).into_owned(), counts);
        }
        Ok(all)
    }

    /// The links in `state`, in key order, read one at a time as the
    /// iterator is advanced: only those links are decoded.
    pub fn links_in(
        &self,
        state: LinkState,
    ) -> impl Iterator<Item = Result<Link, StoreError>> + Send + 'static {
        let store = self.clone();
        let prefix = state.key(&[]);
        let skip = prefix.len();
        self.inner
            .link_states
            .scan_prefix(prefix)
            .keys()
            .filter_map(move |entry| {
                let key = match entry.map_err(StoreError::database("read the link index")) {
                    Ok(key) => key,
                    Err(error) => return Some(Err(error)),
                };
                // A link changed since the index entry was read is skipped if
                // it left the state; the next pass sees its new state.
                match store.link_at(&key[skip..]) {
                    Ok(Some(link)) if state.holds(&link) => Some(Ok(link)),
                    Ok(_) => None,
                    Err(error) => Some(Err(error)),
                }
            })
    }

    /// Builds the counts and the state index of a store written before they
    /// existed, streaming over its links once.
    pub(super) fn build_link_index(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner
            .link_counts
            .contains_key(BUILT_MARKER)
            .map_err(StoreError::database("read the link counts"))?
        {
            return Ok(());
        }
        let mut totals: BTreeMap<String, LinkCounts> = BTreeMap::new();
        let mut built = 0u64;
        for entry in inner.links.iter() {
            let (key, value) = entry.map_err(StoreError::database("read links"))?;
            let link = self.decode_link(&key, &value)?;
            for state in LinkState::ALL
                .into_iter()
                .filter(|state| state.holds(&link))
            {
                inner
                    .link_states
                    .insert(state.key(&key), &[])
                    .map_err(StoreError::database("index a link"))?;
            }
            totals
                .entry(link.mapping.clone())
                .or_default()
                .apply(&LinkCounts::of(&link), 1);
            built += 1;
        }
        for (mapping, counts) in &totals {
            let value = codec::encode_value(LINK_COUNTS_TREE, counts)?;
            inner
                .link_counts
                .insert(counts_key(mapping), value)
                .map_err(StoreError::database("count links"))?;
        }
        inner
            .link_counts
            .insert(BUILT_MARKER, &[])
            .map_err(StoreError::database("count links"))?;
        if built > 0 {
            tracing::info!(links = built, "link counts and index built");
        }
        Ok(())
    }
}
