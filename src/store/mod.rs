//! The sled ledger: cursors, links, intents, inbox, journal, dead letters.
