//! The sync engine: intake, portals, write-back, decisions, reconcile.
