//! Sandbox Ondorse: portals, applications, reviews and webhook delivery, faults.
