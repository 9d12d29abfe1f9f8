//! Sandbox Salesforce: token endpoint, query, describe, composite updates, faults.
