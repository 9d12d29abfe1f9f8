//! Mapping files: every bad input names file:line:column and says what is
//! wrong; the shipped examples load and produce the expected portal bodies
//! and write-backs; values convert to Salesforce field types.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use ondorse_bridge::mapping::{
    self, Mapping, MappingSet, Moment, WritebackContext, convert_value, json_schema, parse_mapping,
};
use ondorse_bridge::salesforce::model::{FieldDescribe, PicklistValue, Record};
use serde_json::{Value, json};

/// A valid file; each bad case below changes one thing in it.
const VALID: &str = r#"version: 1
object: Account
select: "Type = 'Customer'"
portal:
  type: business
  redirect_url: "https://app.example.com/done?account={{ Id }}"
  default_custom_fields:
    salesforce_account_id: "{{ Id }}"
writeback:
  on_application:
    KYC_Status__c:
      value: "{{ application.status_review }}"
      map: { approved: Approved }
"#;

/// Parses `yaml` as `flow.yaml` and compares every diagnostic, one per line,
/// with `expected` (empty: the file must be valid).
fn check(yaml: &str, expected: &str) {
    let actual = match parse_mapping(Path::new("flow.yaml"), yaml) {
        Ok(_) => String::new(),
        Err(diagnostics) => diagnostics.to_string(),
    };
    assert_eq!(actual, expected, "for input:\n{yaml}");
}

fn with(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "`{from}` is not in the valid file");
    VALID.replacen(from, to, 1)
}

#[test]
fn bad_files_are_reported_at_their_position() {
    let cases: Vec<(String, &str)> = vec![
        (VALID.to_owned(), ""),
        (
            with("  type: business", "\ttype: business"),
            "flow.yaml:5:1: tab character in indentation; indent with spaces",
        ),
        (
            with("object: Account\n", "object: Account\nobject: Account\n"),
            "flow.yaml:3:1: duplicate mapping key `object` is not allowed here",
        ),
        (
            with("  redirect_url:", "  redirect_ur:"),
            "flow.yaml:6:3: unknown key `redirect_ur`; did you mean `redirect_url`?",
        ),
        (
            with("writeback:", "writebak:"),
            "flow.yaml:9:1: unknown key `writebak`; did you mean `writeback`?",
        ),
        (
            with("  on_application:", "  on_aplication:"),
            "flow.yaml:10:3: unknown key `on_aplication`; did you mean `on_application`?",
        ),
        (
            with("      map:", "      mapping:"),
            "flow.yaml:13:7: unknown key `mapping`; did you mean `map`?",
        ),
        (
            with("_id: \"{{ Id }}\"", "_id: \"{{ Id \""),
            "flow.yaml:8:32: template error: unexpected end of input, expected end of variable block",
        ),
        (
            with(
                "\"{{ application.status_review }}\"",
                "\"{{ application.status_review | uper }}\"",
            ),
            "flow.yaml:12:46: unknown filter `uper`; did you mean `upper`?",
        ),
        (
            with("type: business", "type: buisness"),
            "flow.yaml:5:9: unknown value `buisness` for `type`, expected one of `business` or `person`; did you mean `business`?",
        ),
        (
            VALID.replacen("version: 1\n", "", 1),
            "flow.yaml:1:1: missing key `version`; add `version: 1` at the top of the file",
        ),
        (
            with("  type: business\n", ""),
            "flow.yaml:5:3: missing key `type` under `portal`",
        ),
        (
            with("object: Account", "object: Account\ncolour: red"),
            "flow.yaml:3:1: unknown key `colour`, expected one of `version`, `name`, `object`, `select`, `portal` or `writeback`",
        ),
        (
            with("select: \"Type = 'Customer'\"", "select: [Type, Customer]"),
            "flow.yaml:3:9: `select` cannot be a list; write one value",
        ),
        (
            with("version: 1", "version: one"),
            "flow.yaml:1:10: invalid u32",
        ),
        (
            with("version: 1", "version: 2"),
            "flow.yaml:1:10: unsupported mapping format version 2; this build reads version 1",
        ),
        (
            with("object: Account", "object: Contact"),
            "flow.yaml:2:9: unknown value `Contact` for `object`, expected `Account`",
        ),
        (
            with("{{ application.status_review }}", "{{ collect.url }}"),
            "flow.yaml:12:18: `collect` is not available in on_application; available there: Account fields, `portal`, `application` and `now`",
        ),
        (
            with(
                "map: { approved: Approved }",
                "map: { approved: \"{{ Name }}\" }",
            ),
            "flow.yaml:13:24: `map` outputs and `default` are fixed values, not templates; put the template in `value`",
        ),
        (
            String::new(),
            "flow.yaml:1:1: the file is empty; a mapping starts with `version: 1`",
        ),
        (
            "just text".to_owned(),
            "flow.yaml:1:1: a mapping file must hold `key: value` lines, not a single value",
        ),
        (
            "- a\n- b\n".to_owned(),
            "flow.yaml:1:1: a mapping file cannot be a list; write its entries as `key: value` lines, without `- ` or `[ ]`",
        ),
        (
            with("      map: { approved: Approved }", "      map: [approved]"),
            "flow.yaml:13:12: `map` cannot be a list; write its entries as `key: value` lines, without `- ` or `[ ]`",
        ),
        (
            with("    KYC_Status__c:\n", "    KYC Status:\n"),
            "flow.yaml:11:5: `KYC Status` is not a Salesforce field API name (letters, digits and `_`, e.g. `KYC_Status__c`)",
        ),
        (
            with("object: Account", "object: Account\nname: Business Flow"),
            "flow.yaml:3:7: name `Business Flow` may only use letters, digits, `_` and `-` (it names the flow in logs and metrics)",
        ),
        // A key with every entry commented out is empty, not an error.
        (format!("{VALID}  on_portal_created:\n"), ""),
        (
            with(
                "  default_custom_fields:\n    salesforce_account_id: \"{{ Id }}\"\n",
                "  default_custom_fields:\n",
            ),
            "",
        ),
        (
            format!("{}writeback:\n", VALID.split("writeback:").next().unwrap()),
            "",
        ),
    ];
    for (yaml, expected) in cases {
        check(&yaml, expected);
    }
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    // Every misspelt key, whatever its depth.
    let yaml = with("  redirect_url:", "  redirect_ur:")
        .replace("writeback:", "writebak:")
        .replace("object: Account", "objetc: Account");
    check(
        &yaml,
        "flow.yaml:2:1: unknown key `objetc`; did you mean `object`?\n\
         flow.yaml:6:3: unknown key `redirect_ur`; did you mean `redirect_url`?\n\
         flow.yaml:9:1: unknown key `writebak`; did you mean `writeback`?",
    );
    // Every problem of the content, once the shape is right.
    let yaml =
        with("version: 1", "version: 3").replace("_id: \"{{ Id }}\"", "_id: \"{{ Id | nope }}\"");
    check(
        &yaml,
        "flow.yaml:1:10: unsupported mapping format version 3; this build reads version 1\n\
         flow.yaml:8:37: unknown filter `nope` (see the minijinja builtin filters)",
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_directory_loads_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let error = mapping::load_dir(dir.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "no mapping files in {} (expected *.yaml)",
            dir.path().display()
        )
    );

    let first = write(
        dir.path(),
        "a.yaml",
        &with("version: 1\n", "version: 1\nname: flow\n"),
    );
    let second = write(
        dir.path(),
        "b.yml",
        &with("version: 1\n", "version: 1\nname: flow\n"),
    );
    let broken = write(dir.path(), "c.yaml", &with("writeback:", "writebak:"));
    write(dir.path(), "notes.txt", "not a mapping");
    let error = mapping::load_dir(dir.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2:7: mapping name `flow` is already used by {}; names must be unique (rename one, or set `name:`)\n\
             {}:9:1: unknown key `writebak`; did you mean `writeback`?",
            second.display(),
            first.display(),
            broken.display()
        )
    );

    std::fs::remove_file(&second).unwrap();
    std::fs::remove_file(&broken).unwrap();
    let set = mapping::load_dir(dir.path()).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.names().collect::<Vec<_>>(), ["flow"]);
}

#[test]
fn an_oversized_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    // Two megabytes of comment: valid YAML, but no mapping is that big.
    let huge = format!("{VALID}{}", "# padding\n".repeat(200_000));
    let path = write(dir.path(), "huge.yaml", &huge);
    let error = mapping::load_dir(dir.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:1:1: file is {} bytes, over the 1048576-byte limit for a mapping file; is it really a mapping?",
            path.display(),
            huge.len()
        )
    );
    let direct = parse_mapping(&path, &huge).unwrap_err();
    assert!(
        direct.to_string().contains("over the 1048576-byte limit"),
        "{direct}"
    );
}

fn examples() -> MappingSet {
    mapping::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"))
        .expect("shipped examples are valid")
}

fn example(name: &str) -> std::sync::Arc<Mapping> {
    examples()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no example mapping {name}"))
}

fn record(value: Value) -> Record {
    value.as_object().cloned().unwrap()
}

fn business_account() -> Record {
    record(json!({
        "attributes": {"type": "Account", "url": "/services/data/v62.0/sobjects/Account/001xx000003DGb2AAG"},
        "Id": "001xx000003DGb2AAG",
        "Name": "Acme SAS",
        "Registration_Number__c": "552100554",
        "BillingCountryCode": "fr",
        "AccountSource": null,
        "Owner": {"attributes": {"type": "User"}, "Email": "sam@example.com"},
        "SystemModstamp": "2026-11-25T20:49:32.000+0000",
    }))
}

#[test]
fn shipped_examples_query_what_their_templates_read() {
    let set = examples();
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["business-onboarding", "person-onboarding"]
    );
    assert_eq!(
        example("business-onboarding").query_fields(),
        [
            "AccountSource",
            "BillingCountryCode",
            "Id",
            "Name",
            "Owner.Email",
            "Registration_Number__c",
            "SystemModstamp"
        ]
    );
    assert_eq!(
        example("person-onboarding").query_fields(),
        [
            "BillingCountryCode",
            "Contact_Email__c",
            "Contact_First_Name__c",
            "Contact_Last_Name__c",
            "Date_Of_Birth__c",
            "Id",
            "SystemModstamp"
        ]
    );
    // Disjoint selections: one Account never gets two portals.
    assert!(
        example("business-onboarding")
            .select
            .contains("Type = 'Customer'")
    );
    assert!(
        example("person-onboarding")
            .select
            .contains("Type = 'Other'")
    );
}

#[test]
fn business_portal_body() {
    let body = example("business-onboarding")
        .portal_body(&business_account())
        .unwrap();
    assert_eq!(
        Value::Object(body),
        json!({
            "type": "business",
            "redirect_url": "https://app.example.com/kyc/done?account=001xx000003DGb2AAG",
            "default_custom_fields": {
                "salesforce_account_id": "001xx000003DGb2AAG",
                "company_name": "Acme SAS",
                "registration_number": "552100554",
                "country": "FR",
                "channel": "unknown",
                "owner_email": "sam@example.com",
            }
        })
    );
    // A null lookup is null (one expression keeps its type), never "none".
    let mut orphan = business_account();
    orphan.insert("Owner".into(), Value::Null);
    let body = example("business-onboarding").portal_body(&orphan).unwrap();
    assert_eq!(body["default_custom_fields"]["owner_email"], Value::Null);
}

fn application(status_review: Value, risk_level: Value, risk_score: Value) -> Value {
    json!({
        "id": "app_5d1e", "status_review": status_review, "status_execution": "done",
        "risk_level": risk_level, "risk_score": risk_score,
        "custom_fields": {"salesforce_account_id": "001xx000003DGb2AAG"},
        "updated_at": "2026-11-26T09:12:03.104000Z",
    })
}

fn writeback_of(
    name: &str,
    moment: Moment,
    application: Option<&Value>,
    collect: Option<&Value>,
) -> Value {
    let account = business_account();
    let portal = json!({"id": "prt_8f2c", "link": "k3J9xQ2mPz", "url": "https://collect.ondorse.co/portals/k3J9xQ2mPz"});
    let context = WritebackContext {
        account: &account,
        portal: Some(&portal),
        application,
        collect,
        now: Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap(),
    };
    Value::Object(example(name).writeback(moment, &context).unwrap())
}

#[test]
fn business_writebacks_for_each_decision_and_risk_level() {
    assert_eq!(
        writeback_of("business-onboarding", Moment::PortalCreated, None, None),
        json!({"Ondorse_Portal_Url__c": "https://collect.ondorse.co/portals/k3J9xQ2mPz", "KYC_Status__c": "Portal sent"})
    );
    let cases = [
        (
            json!("approved"),
            json!(0),
            json!(12.5),
            "Approved",
            json!("Low"),
            json!(12.5),
        ),
        (
            json!("rejected"),
            json!(3),
            json!(97),
            "Rejected",
            json!("Forbidden"),
            json!(97),
        ),
        (
            json!(null),
            json!(1),
            json!(null),
            "In review",
            json!("Medium"),
            json!(null),
        ),
        (
            json!("pending"),
            json!(2),
            json!(40.0),
            "In review",
            json!("High"),
            json!(40.0),
        ),
        (
            json!(null),
            json!(-1),
            json!(null),
            "In review",
            json!(null),
            json!(null),
        ),
    ];
    for (status, level, score, status_field, level_field, score_field) in cases {
        let application = application(status, level, score);
        assert_eq!(
            writeback_of(
                "business-onboarding",
                Moment::Application,
                Some(&application),
                None
            ),
            json!({
                "Ondorse_Application_Id__c": "app_5d1e",
                "KYC_Status__c": status_field,
                "KYC_Risk_Level__c": level_field,
                "KYC_Risk_Score__c": score_field,
            }),
            "for {application}"
        );
    }
    // An application without a risk score at all: null, never "none".
    let mut unscored = application(json!(null), json!(-1), json!(null));
    unscored.as_object_mut().unwrap().remove("risk_score");
    let written = writeback_of(
        "business-onboarding",
        Moment::Application,
        Some(&unscored),
        None,
    );
    assert_eq!(written["KYC_Risk_Score__c"], Value::Null);

    let collect =
        json!({"url": "https://collect.ondorse.co/portals/k3J9xQ2mPz", "link": "k3J9xQ2mPz"});
    assert_eq!(
        writeback_of(
            "business-onboarding",
            Moment::CollectOpened,
            None,
            Some(&collect)
        ),
        json!({"Ondorse_Collect_Url__c": "https://collect.ondorse.co/portals/k3J9xQ2mPz", "KYC_Status__c": "Documents requested"})
    );
}

#[test]
fn person_flow_stamps_the_decision_date_only_once_decided() {
    let decided = application(json!("approved"), json!(1), json!(20));
    let written = writeback_of(
        "person-onboarding",
        Moment::Application,
        Some(&decided),
        None,
    );
    assert_eq!(
        written["KYC_Decision_Date__c"],
        json!("2026-11-26T09:12:03.104000Z")
    );
    assert_eq!(written["KYC_Status__c"], json!("Approved"));
    let undecided = application(json!(null), json!(-1), json!(null));
    let written = writeback_of(
        "person-onboarding",
        Moment::Application,
        Some(&undecided),
        None,
    );
    assert_eq!(written["KYC_Decision_Date__c"], Value::Null);

    let person = record(json!({
        "Id": "001xx000003DGb3AAG", "Contact_First_Name__c": " Ada ", "Contact_Last_Name__c": "Lovelace",
        "Contact_Email__c": "Ada@Example.com", "Date_Of_Birth__c": "1990-12-10", "BillingCountryCode": "gb",
    }));
    let body = example("person-onboarding").portal_body(&person).unwrap();
    assert_eq!(body["type"], json!("person"));
    assert_eq!(
        body["default_custom_fields"],
        json!({"salesforce_account_id": "001xx000003DGb3AAG", "first_name": "Ada", "last_name": "Lovelace",
               "email": "ada@example.com", "date_of_birth": "1990-12-10", "country": "GB"})
    );
}

#[test]
fn written_fields_carry_their_fixed_values_for_online_checks() {
    let mapping = example("business-onboarding");
    let written = mapping.written_fields();
    let risk = written
        .iter()
        .find(|field| field.field == "KYC_Risk_Level__c")
        .unwrap();
    assert_eq!(risk.moment, Moment::Application);
    assert_eq!((risk.position.line, risk.position.column), (38, 5));
    let values: Vec<&Value> = risk.fixed_values.iter().map(|(value, _)| value).collect();
    assert_eq!(
        values,
        [
            &json!("Low"),
            &json!("Medium"),
            &json!("High"),
            &json!("Forbidden"),
            &Value::Null
        ]
    );
    assert!(!risk.may_write_rendered);
    let sent = written
        .iter()
        .find(|field| field.field == "KYC_Status__c" && field.moment == Moment::PortalCreated)
        .unwrap();
    assert_eq!(
        sent.fixed_values
            .iter()
            .map(|(value, _)| value)
            .collect::<Vec<_>>(),
        [&json!("Portal sent")]
    );
    let reads = mapping.read_fields_with_positions();
    let owner = reads
        .iter()
        .find(|(field, _)| field == "Owner.Email")
        .unwrap();
    assert_eq!((owner.1.line, owner.1.column), (26, 22));
}

#[test]
fn an_empty_default_clears_the_field() {
    let yaml = with(
        "      map: { approved: Approved }\n",
        "      map: { approved: Approved }\n      default:\n",
    );
    let mapping = parse_mapping(Path::new("flow.yaml"), &yaml).unwrap();
    let written = on_application(
        &mapping,
        &business_account(),
        &json!({"status_review": "on_hold"}),
    );
    assert_eq!(written["KYC_Status__c"], Value::Null);
    let field = &mapping.written_fields()[0];
    assert_eq!(
        field.fixed_values.last().map(|(value, _)| value),
        Some(&Value::Null)
    );
    assert!(!field.may_write_rendered);
}

#[test]
fn map_without_default_passes_unmatched_values_through() {
    let yaml = with(
        "      map: { approved: Approved }\n",
        "      map: { approved: Approved }\n    Plain__c:\n      value: \"{{ application.risk_level }}\"\n      map: { \"1\": One }\n",
    );
    let mapping = parse_mapping(Path::new("flow.yaml"), &yaml).unwrap();
    let account = business_account();
    let render = |application: Value| {
        let context = WritebackContext {
            account: &account,
            portal: None,
            application: Some(&application),
            collect: None,
            now: Utc::now(),
        };
        mapping.writeback(Moment::Application, &context).unwrap()
    };
    let written = render(json!({"status_review": "on_hold", "risk_level": 1}));
    assert_eq!(written["KYC_Status__c"], json!("on_hold"));
    assert_eq!(written["Plain__c"], json!("One"));
    let written = render(json!({"status_review": null, "risk_level": 2}));
    assert_eq!(written["KYC_Status__c"], Value::Null);
    assert_eq!(written["Plain__c"], json!(2));
}

fn field(name: &str, field_type: &str) -> FieldDescribe {
    FieldDescribe {
        name: name.to_owned(),
        field_type: field_type.to_owned(),
        label: None,
        updateable: true,
        nillable: true,
        calculated: false,
        filterable: Some(true),
        length: 0,
        precision: None,
        scale: None,
        restricted_picklist: false,
        picklist_values: Vec::new(),
        reference_to: Vec::new(),
        relationship_name: None,
    }
}

fn picklist(name: &str, values: &[&str]) -> FieldDescribe {
    FieldDescribe {
        restricted_picklist: true,
        picklist_values: values
            .iter()
            .map(|value| PicklistValue {
                value: (*value).to_owned(),
                label: None,
                active: *value != "Legacy",
            })
            .collect(),
        ..field(name, "picklist")
    }
}

#[test]
fn values_convert_to_salesforce_field_types() {
    let url = FieldDescribe {
        length: 30,
        ..field("Ondorse_Collect_Url__c", "url")
    };
    let risk = picklist(
        "KYC_Risk_Level__c",
        &["Low", "Medium", "High", "Forbidden", "Legacy"],
    );
    let interests = FieldDescribe {
        field_type: "multipicklist".into(),
        ..picklist("Interests__c", &["A", "B"])
    };
    let score = FieldDescribe {
        precision: Some(5),
        scale: Some(2),
        ..field("KYC_Risk_Score__c", "double")
    };
    let required = FieldDescribe {
        nillable: false,
        ..field("Name", "string")
    };
    let cases: Vec<(FieldDescribe, Value, Result<Value, &str>)> = vec![
        (
            url.clone(),
            json!("https://c.example/p/k3"),
            Ok(json!("https://c.example/p/k3")),
        ),
        (
            url.clone(),
            json!("https://collect.ondorse.co/portals/k3J9xQ2mPz"),
            Err(
                "field `Ondorse_Collect_Url__c` (url) cannot take \"https://collect.ondorse.co/portals/k3J9xQ2mPz\": 45 characters, over the field's 30 (shorten the value or widen the field; nothing is truncated)",
            ),
        ),
        (url.clone(), json!(42), Ok(json!("42"))),
        (url.clone(), json!(null), Ok(json!(null))),
        (
            required.clone(),
            json!(null),
            Err(
                "field `Name` (string) cannot take null: the field is required and cannot be cleared; give it a value or a `default`",
            ),
        ),
        (risk.clone(), json!("High"), Ok(json!("High"))),
        (
            risk.clone(),
            json!("high"),
            Err(
                "field `KYC_Risk_Level__c` (picklist) cannot take \"high\": not an active value of this restricted picklist (did you mean `High`?); active values: Low, Medium, High, Forbidden",
            ),
        ),
        (
            risk.clone(),
            json!("Legacy"),
            Err(
                "field `KYC_Risk_Level__c` (picklist) cannot take \"Legacy\": not an active value of this restricted picklist; active values: Low, Medium, High, Forbidden",
            ),
        ),
        (
            field("Source__c", "picklist"),
            json!("Anything"),
            Ok(json!("Anything")),
        ),
        (interests.clone(), json!(["A", "B"]), Ok(json!("A;B"))),
        (
            interests.clone(),
            json!("A; C"),
            Err(
                "field `Interests__c` (multipicklist) cannot take \"A; C\": not an active value of this restricted picklist; active values: A, B",
            ),
        ),
        (field("Flag__c", "boolean"), json!("TRUE"), Ok(json!(true))),
        (field("Flag__c", "boolean"), json!(false), Ok(json!(false))),
        (
            field("Flag__c", "boolean"),
            json!("yes"),
            Err("field `Flag__c` (boolean) cannot take \"yes\": expected true or false"),
        ),
        (
            field("NumberOfEmployees", "int"),
            json!("120"),
            Ok(json!(120)),
        ),
        (
            field("NumberOfEmployees", "int"),
            json!(1.5),
            Err("field `NumberOfEmployees` (int) cannot take 1.5: expected a whole number"),
        ),
        (score.clone(), json!("42.567"), Ok(json!(42.57))),
        (
            score.clone(),
            json!(1234.5),
            Err(
                "field `KYC_Risk_Score__c` (double) cannot take 1234.5: more than 3 digits before the decimal point (precision 5, scale 2)",
            ),
        ),
        (score.clone(), json!(""), Ok(json!(null))),
        (
            field("AnnualRevenue", "currency"),
            json!("abc"),
            Err("field `AnnualRevenue` (currency) cannot take \"abc\": expected a number"),
        ),
        (
            field("Date_Of_Birth__c", "date"),
            json!("1990-12-10"),
            Ok(json!("1990-12-10")),
        ),
        (
            field("Date_Of_Birth__c", "date"),
            json!("2026-11-25T23:30:00-05:00"),
            Ok(json!("2026-11-25")),
        ),
        (
            field("Date_Of_Birth__c", "date"),
            json!("10/12/1990"),
            Err(
                "field `Date_Of_Birth__c` (date) cannot take \"10/12/1990\": expected a date such as 2026-11-25 (or a datetime)",
            ),
        ),
        (
            field("KYC_Decision_Date__c", "datetime"),
            json!("2026-11-25T20:49:32.024461Z"),
            Ok(json!("2026-11-25T20:49:32.024Z")),
        ),
        (
            field("KYC_Decision_Date__c", "datetime"),
            json!("2026-11-25T21:49:32.000+0100"),
            Ok(json!("2026-11-25T20:49:32.000Z")),
        ),
        (
            field("KYC_Decision_Date__c", "datetime"),
            json!("tomorrow"),
            Err(
                "field `KYC_Decision_Date__c` (datetime) cannot take \"tomorrow\": expected a datetime such as 2026-11-25T20:49:32Z (RFC 3339)",
            ),
        ),
        (
            field("OwnerId", "reference"),
            json!("005xx000001SvHbAAK"),
            Ok(json!("005xx000001SvHbAAK")),
        ),
        (
            field("OwnerId", "reference"),
            json!("005xx"),
            Err(
                "field `OwnerId` (reference) cannot take \"005xx\": expected a record Id of 15 or 18 letters and digits",
            ),
        ),
    ];
    for (describe, value, expected) in cases {
        let actual = convert_value(&value, &describe).map_err(|error| error.to_string());
        assert_eq!(
            actual,
            expected.map_err(str::to_owned),
            "converting {value} to {}",
            describe.name
        );
    }
}

/// Every key under an object in `yaml` must be a property the schema
/// declares at that place (or the schema must allow any key there).
fn assert_described(schema: &Value, definitions: &Value, yaml: &Value, path: &str) {
    let schema = resolve(schema, definitions);
    let Some(object) = yaml.as_object() else {
        return;
    };
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let branch = branches
            .iter()
            .map(|branch| resolve(branch, definitions))
            .find(|branch| {
                branch.get("properties").is_some()
                    || branch
                        .get("additionalProperties")
                        .is_some_and(Value::is_object)
            })
            .unwrap_or_else(|| panic!("no object branch in the schema at {path}"));
        return assert_described(branch, definitions, yaml, path);
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, value) in object {
        let child = properties
            .and_then(|properties| properties.get(key))
            .or_else(|| {
                schema
                    .get("additionalProperties")
                    .filter(|extra| extra.is_object())
            })
            .unwrap_or_else(|| panic!("`{path}.{key}` is not in the schema"));
        let described = child
            .get("description")
            .or_else(|| resolve(child, definitions).get("description"));
        assert!(
            described.is_some()
                || properties.is_none_or(|properties| !properties.contains_key(key)),
            "`{path}.{key}` has no description"
        );
        assert_described(child, definitions, value, &format!("{path}.{key}"));
    }
}

fn resolve<'a>(schema: &'a Value, definitions: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(
            &definitions[reference.trim_start_matches("#/$defs/")],
            definitions,
        ),
        None => schema,
    }
}

#[test]
fn the_schema_describes_every_key_of_the_examples() {
    let schema = json_schema();
    let definitions = schema["$defs"].clone();
    for name in ["business-onboarding.yaml", "person-onboarding.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mappings")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=./mapping.schema.json\n"),
            "{name} lacks the schema header"
        );
        let yaml: Value = serde_saphyr::from_str(&text).unwrap();
        assert_described(&schema, &definitions, &yaml, name);
    }
    // The copy shipped next to the examples is the generated one.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mappings")
        .join(mapping::SCHEMA_FILE_NAME);
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&shipped, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&shipped).unwrap_or_default();
    assert!(
        on_disk == generated,
        "mappings/{} is stale; run UPDATE_SCHEMA=1 cargo test --test it mappings",
        mapping::SCHEMA_FILE_NAME
    );
}

#[test]
fn a_field_missing_from_salesforces_answer_is_never_written_as_null() {
    // `description` is not how the org spells it: Salesforce answers
    // `Description`, so the template reads nothing at all.
    let yaml = with(
        "    KYC_Status__c:\n",
        "    Description: \"{{ description }}\"\n    Site: \"{{ Site }}\"\n    KYC_Status__c:\n",
    );
    let mapping = parse_mapping(Path::new("flow.yaml"), &yaml).expect("the file is valid offline");
    let account = record(json!({
        "attributes": {"type": "Account"},
        "Id": "001xx000003DGb2AAG",
        "Description": "kept as it is",
        "Site": null,
    }));
    let application = application(json!("approved"), json!(0), json!(null));
    let written = on_application(&mapping, &account, &application);
    assert!(!written.contains_key("Description"), "{written:?}");
    // A field Salesforce answered empty is empty: writing null clears it.
    assert_eq!(written.get("Site"), Some(&Value::Null), "{written:?}");
    assert_eq!(written["KYC_Status__c"], json!("Approved"));
}

#[test]
fn a_collect_without_a_link_is_never_written_as_null() {
    let application = application(json!(null), json!(-1), json!(null));
    assert_eq!(
        writeback_of(
            "business-onboarding",
            Moment::CollectOpened,
            Some(&application),
            None
        ),
        json!({"KYC_Status__c": "Documents requested"})
    );
}

/// What `mapping` writes at `on_application` for `account` and `application`.
fn on_application(
    mapping: &Mapping,
    account: &Record,
    application: &Value,
) -> serde_json::Map<String, Value> {
    let context = WritebackContext {
        account,
        portal: None,
        application: Some(application),
        collect: None,
        now: Utc::now(),
    };
    mapping.writeback(Moment::Application, &context).unwrap()
}
