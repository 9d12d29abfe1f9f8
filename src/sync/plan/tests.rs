//! The planner's table: (record, application, describe) in, fields out.

use std::path::Path;

use chrono::TimeZone;
use serde_json::{Map, json};

use super::*;
use crate::mapping::parse_mapping;

/// Every moment writes something; the values exercise each planning
/// rule (conversions, refusals, missing inputs, one field two moments
/// write).
const MAPPING: &str = r#"
version: 1
name: table
object: Account
select: "Type = 'Customer'"
portal:
  type: business
  default_custom_fields:
    salesforce_account_id: "{{ Id }}"
writeback:
  on_portal_created:
    Portal_Url__c: "{{ portal.url }}"
    Status__c: Portal sent
  on_application:
    Status__c:
      value: "{{ application.status_review }}"
      map: { approved: Approved, rejected: Rejected }
      default: In review
    Risk_Score__c: "{{ application.risk_score }}"
    Decided_On__c: "{{ application.decided_at }}"
    Reviewer__c: "{{ Reviewer_Source__c }}"
    Parent_Ref__c: "{{ Parent_Source__c }}"
    Gone__c: "{{ application.id }}"
  on_collect_opened:
    Collect_Url__c: "{{ collect.url }}"
    Status__c: Documents requested
"#;

fn mapping() -> Mapping {
    parse_mapping(Path::new("table.yaml"), MAPPING).expect("the table mapping parses")
}

/// The org's Account: `Gone__c` is not in it.
fn describe() -> SObjectDescribe {
    let text = |name: &str, length: u32| json!({ "name": name, "type": "string", "length": length, "updateable": true, "nillable": true });
    serde_json::from_value(json!({
        "name": "Account",
        "fields": [
            { "name": "Id", "type": "id" },
            { "name": "Portal_Url__c", "type": "url", "length": 255, "updateable": true, "nillable": true },
            { "name": "Collect_Url__c", "type": "url", "length": 255, "updateable": true, "nillable": true },
            { "name": "Status__c", "type": "picklist", "updateable": true, "nillable": true,
              "restrictedPicklist": true,
              "picklistValues": [
                  { "value": "Portal sent", "active": true },
                  { "value": "In review", "active": true },
                  { "value": "Approved", "active": true },
                  { "value": "Documents requested", "active": true },
              ] },
            { "name": "Risk_Score__c", "type": "double", "precision": 5, "scale": 2, "updateable": true, "nillable": true },
            { "name": "Decided_On__c", "type": "date", "updateable": true, "nillable": true },
            text("Reviewer__c", 10),
            { "name": "Parent_Ref__c", "type": "reference", "referenceTo": ["Account"], "updateable": true, "nillable": true },
        ],
    }))
    .expect("a describe")
}

/// One row of the table: the inputs of a plan and the fields out.
struct Case {
    name: &'static str,
    moments: &'static [Moment],
    /// The latest moment the link has reached.
    reached: Option<Moment>,
    /// The Account as Salesforce answered it.
    account: Value,
    portal: Option<Value>,
    application: Option<Value>,
    collect: Option<Value>,
    /// What Salesforce holds (as last read, with refusals and pending
    /// writes applied).
    known: Value,
    /// `{"changed": {field: value}, "unchanged": [..], "refused": {field: code}}`.
    expect: Value,
}

fn object(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn check(case: &Case) {
    let account = object(&case.account);
    let context = WritebackContext {
        account: &account,
        portal: case.portal.as_ref(),
        application: case.application.as_ref(),
        collect: case.collect.as_ref(),
        now: Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap(),
    };
    let known: Fields = object(&case.known).into_iter().collect();
    let plan = plan_moments(
        &mapping(),
        case.moments,
        case.reached,
        &context,
        &describe(),
        &known,
    )
    .unwrap_or_else(|(moment, error)| panic!("{}: {moment}: {error}", case.name));
    let mut unchanged = plan.unchanged.clone();
    unchanged.sort();
    let refused: Map<String, Value> = plan
        .refused
        .iter()
        .map(|field| (field.field.clone(), json!(field.code)))
        .collect();
    let got = json!({
        "changed": plan.changed,
        "unchanged": unchanged,
        "refused": refused,
    });
    assert_eq!(got, case.expect, "{}", case.name);
}

fn portal() -> Option<Value> {
    Some(json!({ "id": "ptl_1", "url": "https://ondorse.example/p/1" }))
}

fn application(status: &str) -> Option<Value> {
    Some(json!({
        "id": "app_1",
        "status_review": status,
        "risk_score": 12.345,
        "decided_at": "2026-11-24T17:30:00Z",
    }))
}

/// The Account's own inputs of `on_application`.
fn account() -> Value {
    json!({ "Id": "001000000000001AAA", "Reviewer_Source__c": "Ann", "Parent_Source__c": "001000000000002" })
}

/// What `on_application` writes for `application("approved")` and
/// [`account`], converted.
fn approved_fields() -> Value {
    json!({
        "Status__c": "Approved",
        "Risk_Score__c": 12.35,
        "Decided_On__c": "2026-11-24",
        "Reviewer__c": "Ann",
        "Parent_Ref__c": "001000000000002AAA",
    })
}

#[test]
fn a_plan_sends_only_what_differs_from_what_salesforce_holds() {
    let cases = [
        Case {
            name: "portal sent to an Account that holds nothing",
            moments: &[Moment::PortalCreated],
            reached: Some(Moment::PortalCreated),
            account: account(),
            portal: portal(),
            application: None,
            collect: None,
            known: json!({}),
            expect: json!({
                "changed": { "Portal_Url__c": "https://ondorse.example/p/1", "Status__c": "Portal sent" },
                "unchanged": [],
                "refused": {},
            }),
        },
        Case {
            name: "unchanged values are not sent again",
            moments: &[Moment::PortalCreated],
            reached: Some(Moment::PortalCreated),
            account: account(),
            portal: portal(),
            application: None,
            collect: None,
            known: json!({ "Portal_Url__c": "https://ondorse.example/p/1", "Status__c": "Portal sent" }),
            expect: json!({
                "changed": {},
                "unchanged": ["Portal_Url__c", "Status__c"],
                "refused": {},
            }),
        },
        Case {
            name: "values are converted to each field's type before they are compared",
            moments: &[Moment::Application],
            reached: Some(Moment::Application),
            account: account(),
            portal: portal(),
            application: application("approved"),
            collect: None,
            // As Salesforce answers them: a rounded double, a date, an
            // 18-character reference.
            known: json!({ "Risk_Score__c": 12.35, "Decided_On__c": "2026-11-24", "Parent_Ref__c": "001000000000002AAA" }),
            expect: json!({
                "changed": { "Status__c": "Approved", "Reviewer__c": "Ann" },
                "unchanged": ["Decided_On__c", "Parent_Ref__c", "Risk_Score__c"],
                "refused": { "Gone__c": MISSING_FIELD_CODE },
            }),
        },
        Case {
            name: "values their fields cannot take (too long, not an Id, outside a restricted picklist) are refused, the others still go",
            moments: &[Moment::Application],
            reached: Some(Moment::Application),
            account: json!({ "Id": "001000000000001AAA", "Reviewer_Source__c": "Annabelle Smith", "Parent_Source__c": "not an id" }),
            portal: portal(),
            application: application("rejected"),
            collect: None,
            known: json!({}),
            expect: json!({
                "changed": { "Risk_Score__c": 12.35, "Decided_On__c": "2026-11-24" },
                "unchanged": [],
                "refused": {
                    "Status__c": CONVERSION_ERROR_CODE,
                    "Reviewer__c": CONVERSION_ERROR_CODE,
                    "Parent_Ref__c": CONVERSION_ERROR_CODE,
                    "Gone__c": MISSING_FIELD_CODE,
                },
            }),
        },
        Case {
            name: "a value Salesforce refused before is not sent again",
            moments: &[Moment::Application],
            reached: Some(Moment::Application),
            account: json!({ "Id": "001000000000001AAA", "Reviewer_Source__c": "Annabelle Smith", "Parent_Source__c": "001000000000002" }),
            portal: portal(),
            application: application("approved"),
            collect: None,
            // The refused value is in the baseline as if it were sent.
            known: json!({ "Reviewer__c": "Annabelle Smith", "Gone__c": "app_1" }),
            expect: json!({
                "changed": {
                    "Status__c": "Approved",
                    "Risk_Score__c": 12.35,
                    "Decided_On__c": "2026-11-24",
                    "Parent_Ref__c": "001000000000002AAA",
                },
                "unchanged": ["Gone__c", "Reviewer__c"],
                "refused": {},
            }),
        },
        Case {
            name: "an Account field Salesforce did not answer is skipped, never cleared",
            moments: &[Moment::Application],
            reached: Some(Moment::Application),
            account: json!({ "Id": "001000000000001AAA" }),
            portal: portal(),
            application: application("approved"),
            collect: None,
            known: json!({ "Reviewer__c": "Ann" }),
            expect: json!({
                "changed": { "Status__c": "Approved", "Risk_Score__c": 12.35, "Decided_On__c": "2026-11-24" },
                "unchanged": [],
                "refused": { "Gone__c": MISSING_FIELD_CODE },
            }),
        },
        Case {
            name: "an undecided application falls back on the default",
            moments: &[Moment::Application],
            reached: Some(Moment::Application),
            account: account(),
            portal: portal(),
            application: Some(
                json!({ "id": "app_1", "status_review": null, "risk_score": null, "decided_at": null }),
            ),
            collect: None,
            known: json!({ "Risk_Score__c": 3.5, "Decided_On__c": "2026-11-01" }),
            expect: json!({
                "changed": {
                    "Status__c": "In review",
                    "Risk_Score__c": null,
                    "Decided_On__c": null,
                    "Reviewer__c": "Ann",
                    "Parent_Ref__c": "001000000000002AAA",
                },
                "unchanged": [],
                "refused": { "Gone__c": MISSING_FIELD_CODE },
            }),
        },
        Case {
            name: "a collect opened with its link writes it",
            moments: &[Moment::CollectOpened],
            reached: Some(Moment::CollectOpened),
            account: account(),
            portal: portal(),
            application: application("pending"),
            collect: Some(json!({ "url": "https://ondorse.example/c/1" })),
            known: json!({ "Status__c": "In review" }),
            expect: json!({
                "changed": { "Collect_Url__c": "https://ondorse.example/c/1", "Status__c": "Documents requested" },
                "unchanged": [],
                "refused": {},
            }),
        },
        Case {
            name: "a collect opened without a link writes no link and never clears one",
            moments: &[Moment::CollectOpened],
            reached: Some(Moment::CollectOpened),
            account: account(),
            portal: portal(),
            application: application("pending"),
            collect: None,
            known: json!({ "Collect_Url__c": "https://ondorse.example/c/0" }),
            expect: json!({
                "changed": { "Status__c": "Documents requested" },
                "unchanged": [],
                "refused": {},
            }),
        },
        Case {
            name: "a later moment wins a field both write: the decision overrides portal sent",
            moments: &[Moment::PortalCreated, Moment::Application],
            reached: Some(Moment::Application),
            account: account(),
            portal: portal(),
            application: application("approved"),
            collect: None,
            known: json!({ "Portal_Url__c": "https://ondorse.example/p/1", "Reviewer__c": "Ann" }),
            expect: json!({
                "changed": {
                    "Status__c": "Approved",
                    "Risk_Score__c": 12.35,
                    "Decided_On__c": "2026-11-24",
                    "Parent_Ref__c": "001000000000002AAA",
                },
                "unchanged": ["Portal_Url__c", "Reviewer__c"],
                "refused": { "Gone__c": MISSING_FIELD_CODE },
            }),
        },
        Case {
            name: "a later moment that finds a field unchanged keeps the earlier value from being sent",
            moments: &[Moment::PortalCreated, Moment::Application],
            reached: Some(Moment::Application),
            account: account(),
            portal: portal(),
            application: application("approved"),
            collect: None,
            known: object(&approved_fields())
                .into_iter()
                .chain([("Gone__c".to_owned(), json!("app_1"))])
                .collect::<Map<_, _>>()
                .into(),
            expect: json!({
                "changed": { "Portal_Url__c": "https://ondorse.example/p/1" },
                "unchanged": ["Decided_On__c", "Gone__c", "Parent_Ref__c", "Reviewer__c", "Risk_Score__c", "Status__c"],
                "refused": {},
            }),
        },
        Case {
            name: "an application linked to a fresh portal writes every field it has",
            moments: &[Moment::Application],
            reached: Some(Moment::PortalCreated),
            account: account(),
            portal: portal(),
            application: application("approved"),
            collect: None,
            known: json!({ "Status__c": "Portal sent" }),
            expect: json!({
                "changed": approved_fields(),
                "unchanged": [],
                "refused": { "Gone__c": MISSING_FIELD_CODE },
            }),
        },
        Case {
            name: "a portal write-back planned after the decision leaves the decision's fields: the link still goes",
            moments: &[Moment::PortalCreated],
            reached: Some(Moment::Application),
            account: account(),
            portal: portal(),
            application: None,
            collect: None,
            known: json!({ "Status__c": "Approved" }),
            expect: json!({
                "changed": { "Portal_Url__c": "https://ondorse.example/p/1" },
                "unchanged": [],
                "refused": {},
            }),
        },
        Case {
            name: "a portal write-back planned after documents were requested leaves the status",
            moments: &[Moment::PortalCreated],
            reached: Some(Moment::CollectOpened),
            account: account(),
            portal: portal(),
            application: None,
            collect: None,
            known: json!({ "Status__c": "Documents requested" }),
            expect: json!({
                "changed": { "Portal_Url__c": "https://ondorse.example/p/1" },
                "unchanged": [],
                "refused": {},
            }),
        },
        Case {
            name: "a refresh after documents were requested leaves the status and writes the rest",
            moments: &[Moment::Application],
            reached: Some(Moment::CollectOpened),
            account: account(),
            portal: portal(),
            application: application("pending"),
            collect: None,
            known: json!({ "Status__c": "Documents requested", "Collect_Url__c": "https://ondorse.example/c/1" }),
            expect: json!({
                "changed": {
                    "Risk_Score__c": 12.35,
                    "Decided_On__c": "2026-11-24",
                    "Reviewer__c": "Ann",
                    "Parent_Ref__c": "001000000000002AAA",
                },
                "unchanged": [],
                "refused": { "Gone__c": MISSING_FIELD_CODE },
            }),
        },
        Case {
            name: "a resync after documents were requested plans the portal and the application, leaving the status",
            moments: &[Moment::PortalCreated, Moment::Application],
            reached: Some(Moment::CollectOpened),
            account: account(),
            portal: portal(),
            application: application("pending"),
            collect: None,
            known: object(&approved_fields())
                .into_iter()
                .chain([
                    ("Gone__c".to_owned(), json!("app_1")),
                    ("Status__c".to_owned(), json!("Documents requested")),
                ])
                .collect::<Map<_, _>>()
                .into(),
            expect: json!({
                "changed": { "Portal_Url__c": "https://ondorse.example/p/1" },
                "unchanged": ["Decided_On__c", "Gone__c", "Parent_Ref__c", "Reviewer__c", "Risk_Score__c"],
                "refused": {},
            }),
        },
        Case {
            name: "no moment reached, nothing planned",
            moments: &[],
            reached: None,
            account: account(),
            portal: None,
            application: None,
            collect: None,
            known: json!({}),
            expect: json!({ "changed": {}, "unchanged": [], "refused": {} }),
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn the_moments_a_link_reached_are_planned_in_order() {
    for (has_portal, has_application, expected) in [
        (false, false, vec![]),
        (true, false, vec![Moment::PortalCreated]),
        (false, true, vec![Moment::Application]),
        (true, true, vec![Moment::PortalCreated, Moment::Application]),
    ] {
        assert_eq!(
            moments_reached(has_portal, has_application),
            expected,
            "portal {has_portal}, application {has_application}"
        );
    }
}

#[test]
fn a_link_reaches_the_portal_then_the_application_then_documents_requested_until_the_decision() {
    let link =
        |portal: bool, application: bool, collect_opened: bool, decision_final: bool| -> Link {
            serde_json::from_value(json!({
                "mapping": "table",
                "account_id": "001000000000001AAA",
                "idempotency_key": "key",
                "intent_at": "2026-11-25T08:00:00Z",
                "portal": portal.then(|| json!({
                    "id": "ptl_1",
                    "url": "https://ondorse.example/p/1",
                    "created_at": "2026-11-25T08:00:00Z",
                    "answer": { "id": "ptl_1" },
                })),
                "application_id": application.then_some("app_1"),
                "decision_final": decision_final,
                "collect_opened": collect_opened,
                "account": account(),
            }))
            .expect("a link")
        };
    for (portal, application, collect_opened, decision_final, expected) in [
        (false, false, false, false, None),
        (true, false, false, false, Some(Moment::PortalCreated)),
        (true, true, false, false, Some(Moment::Application)),
        (true, true, false, true, Some(Moment::Application)),
        (true, true, true, false, Some(Moment::CollectOpened)),
        (true, true, true, true, Some(Moment::Application)),
    ] {
        assert_eq!(
            reached(&link(portal, application, collect_opened, decision_final)),
            expected,
            "portal {portal}, application {application}, collect {collect_opened}, final {decision_final}"
        );
    }
    assert!(collect_writes(false));
    assert!(
        !collect_writes(true),
        "a final decision is never overwritten"
    );
}

#[test]
fn queries_read_every_field_a_mapping_needs_in_chunks_of_ids() {
    let mapping = mapping();
    let ids: Vec<String> = (0..1001).map(|serial| format!("001{serial:015}")).collect();
    let queries = accounts_queries(&mapping, &ids);
    assert_eq!(queries.len(), 3, "500 Ids a query");
    assert!(
        queries[2].contains("Id IN ('001000000000001000')"),
        "{}",
        queries[2]
    );
    assert!(
        queries[0].starts_with("SELECT Id, ")
            && queries[0].contains("WHERE (Type = 'Customer') AND Id IN ('001000000000000000', ")
            && queries[0].ends_with(") ORDER BY SystemModstamp, Id"),
        "{}",
        queries[0]
    );
    for field in [
        "Reviewer_Source__c",
        "Parent_Source__c",
        "Status__c",
        "Portal_Url__c",
    ] {
        assert!(queries[0].contains(field), "{field}: {}", queries[0]);
    }
    let by_id = by_id_queries(&mapping, &["001000000000001AAA"]);
    assert_eq!(by_id.len(), 1);
    assert!(!by_id[0].contains("Type = 'Customer'"), "{}", by_id[0]);
    assert!(
        by_id[0].ends_with("WHERE Id IN ('001000000000001AAA') ORDER BY Id"),
        "{}",
        by_id[0]
    );
    assert_eq!(
        fields_queries("Account", ["IsDeleted", "id"], &["001' OR Name != '"]),
        vec!["SELECT Id, IsDeleted FROM Account WHERE Id IN ('001\\' OR Name != \\'') ORDER BY Id"]
    );
    assert!(
        fields_queries("Account", ["IsDeleted"], &[] as &[&str]).is_empty(),
        "no Ids, no query"
    );
    assert_eq!(
        intake_query(&mapping, Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap())
            .rsplit_once(" FROM ")
            .map(|(_, rest)| rest.to_owned()),
        Some("Account WHERE (Type = 'Customer') AND SystemModstamp >= 2026-11-25T08:00:00Z ORDER BY SystemModstamp, Id".to_owned())
    );
    assert_eq!(
        select_check_query(&mapping),
        "SELECT Id FROM Account WHERE (Type = 'Customer') LIMIT 1"
    );
}
