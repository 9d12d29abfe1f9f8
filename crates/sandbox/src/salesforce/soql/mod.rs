//! The SOQL subset the sandbox understands: a hand-written lexer, a
//! recursive-descent parser, a resolver that checks every field against the
//! schema (as Salesforce does before running anything), and the evaluator.
//!
//! ```text
//! SELECT path {, path} FROM object
//!   [WHERE condition] [ORDER BY path [ASC|DESC] [NULLS FIRST|LAST] {, ...}] [LIMIT n]
//! condition := unary {AND unary} | unary {OR unary}   (mixing needs parentheses)
//! unary     := NOT unary | '(' condition ')' | path operator literal
//!            | path LIKE 'pattern' | path [NOT] IN '(' literal {, literal} ')'
//! ```
//!
//! Errors carry the code and the message Salesforce gives (`MALFORMED_QUERY`,
//! `INVALID_FIELD`, `INVALID_TYPE`), with the row and column of the token.
//!
//! Text flows `lexer` → `parser` (syntax only) → `resolve` (fields, types)
//! → `evaluate` (filter, sort, render rows).

mod evaluate;
mod lexer;
mod parser;
mod resolve;

pub(crate) use resolve::{Query, Schemas, Target, compile};

/// Salesforce refuses statements longer than this many characters.
pub(crate) const MAX_STATEMENT_CHARACTERS: usize = 100_000;
/// Source lines longer than this are cut around the error in messages.
const MESSAGE_LINE_WINDOW: usize = 120;

/// A refused query: the `errorCode` and `message` of the 400 answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SoqlError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// Where a query went wrong, to build messages the way Salesforce does.
struct Source<'a> {
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, code: &'static str, position: usize, detail: impl AsRef<str>) -> SoqlError {
        let position = position.min(self.text.len());
        let line_start = self.text[..position]
            .rfind('\n')
            .map_or(0, |index| index + 1);
        let line_end = self.text[position..]
            .find('\n')
            .map_or(self.text.len(), |index| position + index);
        let row = self.text[..position].matches('\n').count() + 1;
        let column = self.text[line_start..position].chars().count() + 1;
        let line = &self.text[line_start..line_end];
        let (shown, caret_column) = if line.chars().count() > MESSAGE_LINE_WINDOW {
            let skip = column.saturating_sub(MESSAGE_LINE_WINDOW / 2);
            let shown: String = line.chars().skip(skip).take(MESSAGE_LINE_WINDOW).collect();
            (shown, column - skip)
        } else {
            (line.to_owned(), column)
        };
        let caret = format!("{}^", " ".repeat(caret_column - 1));
        SoqlError {
            code,
            message: format!(
                "\n{shown}\n{caret}\nERROR at Row:{row}:Column:{column}\n{}",
                detail.as_ref()
            ),
        }
    }

    fn malformed(&self, position: usize, detail: impl AsRef<str>) -> SoqlError {
        self.error("MALFORMED_QUERY", position, detail)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::evaluate::like;
    use super::lexer::lex_string;
    use super::*;
    use crate::salesforce::data::{self, Row, Table, account_schema, user_schema};

    fn check(text: &str) -> Result<Query, SoqlError> {
        let account = account_schema();
        let user = user_schema();
        compile(
            text,
            &Schemas {
                account: &account,
                user: &user,
            },
        )
    }

    fn error_code(text: &str) -> &'static str {
        check(text).expect_err(text).code
    }

    fn row(fields: serde_json::Value) -> Row {
        fields.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_the_supported_subset() {
        for text in [
            "SELECT Id FROM Account",
            "select id, name, owner.email from account where name = 'x'",
            "SELECT Id FROM Account WHERE (Type = 'Customer' AND KYC_Status__c = null) OR Name LIKE 'A%'",
            "SELECT Id FROM Account WHERE NOT Name IN ('a', 'b') AND Type NOT IN ('Other')",
            "SELECT Id FROM Account WHERE SystemModstamp >= 2026-11-25T20:49:32Z ORDER BY SystemModstamp, Id LIMIT 10",
            "SELECT Id FROM Account WHERE SystemModstamp > 2026-11-25T20:49:32.000+01:00",
            "SELECT Id FROM Account WHERE Date_Of_Birth__c < 2000-01-01 AND IsDeleted = false",
            "SELECT Id FROM Account WHERE NumberOfEmployees >= -5 AND KYC_Risk_Score__c < 12.5",
            "SELECT Id FROM Account ORDER BY Name DESC NULLS FIRST, Id ASC NULLS LAST",
            "SELECT Id, Email FROM User WHERE IsActive = true",
        ] {
            check(text).unwrap_or_else(|error| panic!("{text}: {}", error.message));
        }
    }

    #[test]
    fn refuses_what_salesforce_refuses() {
        assert_eq!(error_code("SELECT FROM Account"), "MALFORMED_QUERY");
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE Name = 'a' AND Type = 'b' OR Id = null"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE Name = 'unterminated"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE Name = 'bad \\q escape'"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account LIMIT"),
            "MALFORMED_QUERY"
        );
        assert_eq!(error_code("SELECT Id, Id FROM Account"), "MALFORMED_QUERY");
        assert_eq!(error_code("SELECT COUNT() FROM Account"), "MALFORMED_QUERY");
        assert_eq!(error_code("SELECT Foo__c FROM Account"), "INVALID_FIELD");
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE Foo__c = 1"),
            "INVALID_FIELD"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account ORDER BY Foo__c"),
            "INVALID_FIELD"
        );
        assert_eq!(
            error_code("SELECT Manager.Email FROM Account"),
            "INVALID_FIELD"
        );
        assert_eq!(error_code("SELECT Owner.Foo FROM Account"), "INVALID_FIELD");
        assert_eq!(error_code("SELECT Id FROM Contact"), "INVALID_TYPE");
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE SystemModstamp > '2026-11-25T20:49:32Z'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE Name = 5"),
            "INVALID_FIELD"
        );
        assert_eq!(
            error_code("SELECT Id FROM Account WHERE Description = 'x'"),
            "INVALID_FIELD"
        );
        let long = format!(
            "SELECT Id FROM Account WHERE Name = '{}'",
            "x".repeat(MAX_STATEMENT_CHARACTERS)
        );
        assert_eq!(error_code(&long), "MALFORMED_QUERY");
    }

    #[test]
    fn messages_point_at_the_token() {
        let error = check("SELECT Id FROM Account WHERE Name = 'x' OR").unwrap_err();
        assert!(
            error.message.contains("ERROR at Row:1:Column:43"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("unexpected token: '<EOF>'"),
            "{}",
            error.message
        );
        let error = check("SELECT Id, Foo__c FROM Account").unwrap_err();
        assert!(
            error
                .message
                .contains("No such column 'Foo__c' on entity 'Account'"),
            "{}",
            error.message
        );
        assert!(error.message.contains("Column:12"), "{}", error.message);
    }

    #[test]
    fn evaluates_like_salesforce() {
        let users = Table::new();
        let account = row(
            json!({"Id": "001Sb00000000001AAA", "Name": "Acme SAS", "Type": null,
            "NumberOfEmployees": 40, "SystemModstamp": "2026-11-25T20:49:32.000+0000", "IsDeleted": false}),
        );
        let matches = |condition: &str| {
            check(&format!("SELECT Id FROM Account WHERE {condition}"))
                .unwrap_or_else(|error| panic!("{condition}: {}", error.message))
                .matches(&account, &users)
        };
        assert!(matches("Name = 'ACME sas'"));
        assert!(matches("Name LIKE 'acme%'"));
        assert!(matches("Name LIKE '_cme S_S'"));
        assert!(!matches("Name LIKE 'acme'"));
        assert!(matches("Type = null"));
        assert!(matches("Type != 'Customer'"));
        assert!(!matches("Type = 'Customer'"));
        assert!(matches("Type NOT IN ('Customer')"));
        assert!(!matches("Type IN ('Customer')"));
        assert!(matches(
            "NumberOfEmployees > 39.5 AND NumberOfEmployees <= 40"
        ));
        assert!(matches("SystemModstamp = 2026-11-25T21:49:32+01:00"));
        assert!(matches("SystemModstamp > 2026-11-25T20:49:31.999Z"));
        assert!(!matches("SystemModstamp > 2026-11-25T20:49:32Z"));
        assert!(matches("NOT (Name = 'x' OR Type = 'y')"));
        assert!(matches("IsDeleted = false"));
    }

    #[test]
    fn escapes_decode_and_wildcards_can_be_escaped() {
        let users = Table::new();
        let tricky =
            row(json!({"Id": "001Sb00000000001AAA", "Name": "O'Brien 100% \\ tab\there é"}));
        let query =
            check(r"SELECT Id FROM Account WHERE Name = 'O\'Brien 100% \\ tab\there \u00e9'")
                .unwrap();
        assert!(query.matches(&tricky, &users));
        let query = check(r"SELECT Id FROM Account WHERE Name LIKE '%100\% \\%'").unwrap();
        assert!(query.matches(&tricky, &users));
        let query = check(r"SELECT Id FROM Account WHERE Name LIKE '%100\%x%'").unwrap();
        assert!(!query.matches(&tricky, &users));
    }

    #[test]
    fn relationship_fields_nest_and_a_missing_target_is_null() {
        let mut users = Table::new();
        let owner = data::make_id(data::USER_PREFIX, 9);
        users.insert(
            owner.clone(),
            Arc::new(row(
                json!({"Id": owner, "Email": "o@example.com", "Name": "O"}),
            )),
        );
        let query = check("SELECT Owner.Email, Name, Owner.Name FROM Account").unwrap();
        let owned = row(json!({"Id": "001Sb00000000001AAA", "Name": "A", "OwnerId": owner}));
        let rendered = query.render(&owned, &users, "62.0");
        assert_eq!(
            serde_json::to_string(&rendered).unwrap(),
            serde_json::to_string(&json!({
                "attributes": {"type": "Account", "url": "/services/data/v62.0/sobjects/Account/001Sb00000000001AAA"},
                "Owner": {
                    "attributes": {"type": "User", "url": format!("/services/data/v62.0/sobjects/User/{owner}")},
                    "Email": "o@example.com",
                    "Name": "O",
                },
                "Name": "A",
            }))
            .unwrap(),
            "keys keep the select order"
        );
        let orphan = row(json!({"Id": "001Sb00000000002AAA", "Name": "B", "OwnerId": null}));
        assert_eq!(query.render(&orphan, &users, "62.0")["Owner"], Value::Null);
    }

    #[test]
    fn like_backtracks() {
        let text: Vec<char> = "abcabcabd".chars().collect();
        let pattern = |text: &str| {
            let source = Source { text };
            lex_string(&source, 0).unwrap().0.pattern
        };
        assert!(like(&text, &pattern("'%abd'")));
        assert!(like(&text, &pattern("'a%c%d'")));
        assert!(!like(&text, &pattern("'a%c%e'")));
        assert!(like(&[], &pattern("'%'")));
    }
}
