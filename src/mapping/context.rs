//! What templates read besides Account fields: `portal`, `application`,
//! `collect` and `now`, with the names each one holds, so every path a
//! template reads is checked offline (`{{ portal.ulr }}` is an error, not a
//! null that clears a field at run time).

use crate::text::{did_you_mean, suggestion};

/// Names that templates read but that are not Account fields.
pub const CONTEXT_ROOTS: &[&str] = &["portal", "application", "collect", "now"];

/// `portal`: the portal answer, `url` resolved from `link` when Ondorse gave none.
const PORTAL_NAMES: &[&str] = &["id", "link", "url", "created_at"];
/// `collect`: the open document collection, from the `collect.opened` event.
const COLLECT_NAMES: &[&str] = &["link", "url", "at"];
/// `application`: the documented fields of an Ondorse application
/// (what `GET /api/applications/{id}` documents). The set is open: any other field Ondorse returns
/// is kept and readable, so an unknown name is only suspicious when it is
/// close to a documented one.
const APPLICATION_NAMES: &[&str] = &[
    "id",
    "status_review",
    "status_execution",
    "risk_level",
    "risk_score",
    "custom_fields",
    "business",
    "person",
    "portals",
    "created_at",
    "updated_at",
];

/// What a checked path turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathCheck {
    /// A context name used as documented, or an Account field path (which
    /// only the org can check).
    Fine,
    /// Certainly wrong: an error with what to write instead.
    Error(String),
    /// Probably wrong but possibly real (an undocumented application field
    /// close to a documented one): a warning.
    Warning(String),
}

/// Checks one variable path a template reads (`portal.url`, `Owner.Email`).
pub fn check_path(path: &str) -> PathCheck {
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or_default();
    let member = segments.next();
    match (root, member) {
        ("now", Some(member)) => PathCheck::Error(format!(
            "`now` is the current time as text (such as 2026-11-25T20:49:32.000Z) and has no field `{member}`; write `{{{{ now }}}}`"
        )),
        ("portal", Some(member)) => closed("portal", member, PORTAL_NAMES),
        ("collect", Some(member)) => closed("collect", member, COLLECT_NAMES),
        ("application", Some(member)) if !APPLICATION_NAMES.contains(&member) => {
            match suggestion(member, APPLICATION_NAMES.iter().copied()) {
                Some(near) => PathCheck::Warning(format!(
                    "`application.{member}` is not a documented application field; did you mean `{near}`? (an undocumented field is read as Ondorse sends it, and is empty when Ondorse sends none)"
                )),
                None => PathCheck::Fine,
            }
        }
        _ if CONTEXT_ROOTS.contains(&root) => PathCheck::Fine,
        _ => near_root(root),
    }
}

fn closed(root: &str, member: &str, names: &[&str]) -> PathCheck {
    if names.contains(&member) {
        return PathCheck::Fine;
    }
    let listed: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    let near = did_you_mean(member, names.iter().copied());
    PathCheck::Error(format!(
        "`{root}` has no `{member}`{near} (`{root}` holds {})",
        listed.join(", ")
    ))
}

/// A root that is not a context name but looks like one (`aplication`,
/// `portl`, `Portal`). A Salesforce custom field or relationship has `__`
/// in its name (`Portal__c`), so such names are never taken for a typo.
fn near_root(root: &str) -> PathCheck {
    if root.contains("__") {
        return PathCheck::Fine;
    }
    match suggestion(root, CONTEXT_ROOTS.iter().copied()) {
        Some(near) => PathCheck::Error(format!(
            "unknown name `{root}`; did you mean `{near}`? (names are case-sensitive; Account fields are read by their API name, such as `Name` or `KYC_Status__c`)"
        )),
        None => PathCheck::Fine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(path: &str) -> String {
        match check_path(path) {
            PathCheck::Error(message) => message,
            other => panic!("{path}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn closed_roots_know_their_names() {
        assert_eq!(check_path("portal.url"), PathCheck::Fine);
        assert_eq!(check_path("collect.link"), PathCheck::Fine);
        assert_eq!(check_path("now"), PathCheck::Fine);
        assert_eq!(
            error("portal.ulr"),
            "`portal` has no `ulr`; did you mean `url`? (`portal` holds `id`, `link`, `url`, `created_at`)"
        );
        assert!(error("collect.adress").starts_with("`collect` has no `adress` (`collect` holds"));
        assert!(error("now.date").starts_with("`now` is the current time as text"));
    }

    #[test]
    fn application_is_open_but_near_misses_warn() {
        assert_eq!(check_path("application.risk_level"), PathCheck::Fine);
        assert_eq!(
            check_path("application.business.organization_name"),
            PathCheck::Fine
        );
        assert_eq!(check_path("application.kyc_notes"), PathCheck::Fine);
        assert!(matches!(
            check_path("application.risk_levle"),
            PathCheck::Warning(message) if message.contains("did you mean `risk_level`?")
        ));
    }

    #[test]
    fn roots_close_to_a_context_name_are_typos_and_account_fields_are_not() {
        assert!(error("aplication.id").contains("did you mean `application`?"));
        assert!(error("portl.url").contains("did you mean `portal`?"));
        assert!(error("Portal.url").contains("did you mean `portal`?"));
        // Standard Account fields and custom fields are left to the org.
        for field in [
            "Id",
            "Name",
            "Type",
            "Phone",
            "Owner.Email",
            "AccountSource",
            "AccountNumber",
            "Industry",
            "Description",
            "ParentId",
            "Parent.Name",
            "Site",
            "Website",
            "NumberOfEmployees",
            "BillingCountryCode",
            "Portal__c",
            "Collection_Date__c",
            "Application__r.Name",
        ] {
            assert_eq!(check_path(field), PathCheck::Fine, "{field}");
        }
    }
}
