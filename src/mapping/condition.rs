//! The product's own reader of a mapping's `select`: a SOQL condition (what
//! follows `WHERE`). It checks the syntax offline, so `check` refuses a
//! condition Salesforce would refuse at the first poll: unbalanced quotes or
//! parentheses, an unknown operator, text without quotes, AND mixed with OR
//! without parentheses. Field names are checked online, against describe.
//!
//! The sandbox Salesforce has a SOQL parser of its own: the two are
//! independent implementations of one grammar, on purpose.

/// Why a condition is not valid SOQL, at a byte offset of the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub offset: usize,
    pub message: String,
}

/// Checks the syntax of a SOQL condition.
pub fn check_condition(text: &str) -> Result<(), ConditionError> {
    let tokens = tokens(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
        end: text.len(),
    };
    parser.expression()?;
    match parser.peek() {
        None => Ok(()),
        Some(token) if token.kind == Kind::Close => {
            Err(token.error("this `)` closes no `(`".to_owned()))
        }
        Some(token) if matches_word(token, &["ORDER", "LIMIT", "GROUP", "OFFSET"]) => Err(token
            .error(format!(
                "`{}` does not belong in `select`: write only the condition that follows WHERE",
                token.text
            ))),
        Some(token) => Err(token.error(format!(
            "unexpected `{}` after a complete condition; join conditions with AND or OR",
            token.text
        ))),
    }
}

/// SOQL's comparison operators, as the messages list them.
const OPERATORS: &str = "=, !=, <, <=, >, >=, LIKE, IN, NOT IN, INCLUDES, EXCLUDES";

/// Date literals usable as values (`CreatedDate = LAST_YEAR`); those taking
/// a number (`LAST_N_DAYS:30`) are recognised by their shape.
const DATE_LITERALS: &[&str] = &[
    "YESTERDAY",
    "TODAY",
    "TOMORROW",
    "LAST_WEEK",
    "THIS_WEEK",
    "NEXT_WEEK",
    "LAST_MONTH",
    "THIS_MONTH",
    "NEXT_MONTH",
    "LAST_90_DAYS",
    "NEXT_90_DAYS",
    "THIS_QUARTER",
    "LAST_QUARTER",
    "NEXT_QUARTER",
    "THIS_YEAR",
    "LAST_YEAR",
    "NEXT_YEAR",
    "THIS_FISCAL_QUARTER",
    "LAST_FISCAL_QUARTER",
    "NEXT_FISCAL_QUARTER",
    "THIS_FISCAL_YEAR",
    "LAST_FISCAL_YEAR",
    "NEXT_FISCAL_YEAR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A name, a keyword or a date literal: letters, digits, `_`, `.`, `:`.
    Word,
    /// A number, date or date-time: starts with a digit or a sign.
    Literal,
    /// Text in single quotes.
    Text,
    Open,
    Close,
    Comma,
    /// `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`.
    Comparison,
}

#[derive(Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    offset: usize,
}

impl Token<'_> {
    fn error(&self, message: String) -> ConditionError {
        ConditionError {
            offset: self.offset,
            message,
        }
    }
}

fn matches_word(token: &Token, words: &[&str]) -> bool {
    token.kind == Kind::Word
        && words
            .iter()
            .any(|word| token.text.eq_ignore_ascii_case(word))
}

fn tokens(text: &str) -> Result<Vec<Token<'_>>, ConditionError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    let error = |offset, message: String| Err(ConditionError { offset, message });
    while at < bytes.len() {
        let start = at;
        let byte = bytes[at];
        let kind = match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {
                at += 1;
                continue;
            }
            b'\'' => {
                at += 1;
                loop {
                    match bytes.get(at) {
                        None => {
                            return error(
                                start,
                                "this quote is never closed; end the text with '".to_owned(),
                            );
                        }
                        Some(b'\\') => at += 2,
                        Some(b'\'') => break,
                        Some(_) => at += 1,
                    }
                }
                at += 1;
                Kind::Text
            }
            b'"' => {
                return error(
                    start,
                    "SOQL text goes in single quotes ('Customer'), not double quotes".to_owned(),
                );
            }
            b'(' => {
                at += 1;
                Kind::Open
            }
            b')' => {
                at += 1;
                Kind::Close
            }
            b',' => {
                at += 1;
                Kind::Comma
            }
            b'=' | b'!' | b'<' | b'>' => {
                while at < bytes.len() && b"=!<>".contains(&bytes[at]) {
                    at += 1;
                }
                if !["=", "!=", "<>", "<", "<=", ">", ">="].contains(&&text[start..at]) {
                    return error(
                        start,
                        format!(
                            "unknown operator `{}`; SOQL compares with {OPERATORS}",
                            &text[start..at]
                        ),
                    );
                }
                Kind::Comparison
            }
            byte if byte.is_ascii_digit() || byte == b'-' || byte == b'+' => {
                at += 1;
                while at < bytes.len()
                    && (bytes[at].is_ascii_alphanumeric() || b".:+-".contains(&bytes[at]))
                {
                    at += 1;
                }
                Kind::Literal
            }
            byte if byte.is_ascii_alphabetic() || byte == b'_' => {
                while at < bytes.len()
                    && (bytes[at].is_ascii_alphanumeric() || b"_.:".contains(&bytes[at]))
                {
                    at += 1;
                }
                Kind::Word
            }
            _ => {
                let character = text[start..].chars().next().unwrap_or_default();
                return error(
                    start,
                    format!("`{character}` has no meaning in a SOQL condition"),
                );
            }
        };
        tokens.push(Token {
            kind,
            text: &text[start..at],
            offset: start,
        });
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token<'a>],
    next: usize,
    /// The condition's length: where "the end" is.
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token<'a>> {
        self.tokens.get(self.next)
    }

    fn advance(&mut self) -> Option<&'a Token<'a>> {
        let token = self.tokens.get(self.next);
        self.next += 1;
        token
    }

    /// The next token, or an error saying `what` was expected at the end.
    fn expect(&mut self, what: &str) -> Result<&'a Token<'a>, ConditionError> {
        self.advance().ok_or_else(|| ConditionError {
            offset: self.end,
            message: format!("the condition ends where {what} was expected"),
        })
    }

    /// Terms joined by one of AND or OR: SOQL refuses a mix without
    /// parentheses.
    fn expression(&mut self) -> Result<(), ConditionError> {
        self.term()?;
        let mut joiner: Option<&str> = None;
        while let Some(token) = self
            .peek()
            .filter(|token| matches_word(token, &["AND", "OR"]))
        {
            let this = token.text.to_ascii_uppercase();
            match joiner {
                Some(first) if first != this => {
                    return Err(token.error(format!(
                        "`{}` after `{first}` needs parentheses: SOQL does not decide which comes first, e.g. a AND (b OR c)",
                        token.text
                    )));
                }
                _ => joiner = Some(if this == "AND" { "AND" } else { "OR" }),
            }
            self.next += 1;
            self.term()?;
        }
        Ok(())
    }

    fn term(&mut self) -> Result<(), ConditionError> {
        let token = self.expect("a condition")?;
        if matches_word(token, &["NOT"]) {
            return self.term();
        }
        if token.kind == Kind::Open {
            self.expression()?;
            return self.close(token);
        }
        if matches_word(token, &["WHERE"]) && self.next == 1 {
            return Err(
                token.error("start `select` with the condition itself, without WHERE".to_owned())
            );
        }
        if token.kind != Kind::Word || matches_word(token, &["AND", "OR"]) {
            return Err(token.error(format!("expected a field name, found `{}`", token.text)));
        }
        // A date function of a field: CALENDAR_YEAR(CreatedDate) = 2026.
        if self.peek().is_some_and(|next| next.kind == Kind::Open) {
            let open = self.expect("`(`")?;
            let field = self.expect("a field name")?;
            if field.kind != Kind::Word {
                return Err(field.error(format!("expected a field name, found `{}`", field.text)));
            }
            self.close(open)?;
        }
        self.comparison()
    }

    /// The `)` matching `open`.
    fn close(&mut self, open: &Token) -> Result<(), ConditionError> {
        match self.advance() {
            Some(token) if token.kind == Kind::Close => Ok(()),
            Some(token) => {
                Err(token.error(format!("expected `)` or AND/OR, found `{}`", token.text)))
            }
            None => Err(open.error("this `(` is never closed".to_owned())),
        }
    }

    /// An operator and its value, after a field.
    fn comparison(&mut self) -> Result<(), ConditionError> {
        let operator = self.expect(&format!("an operator ({OPERATORS})"))?;
        if operator.kind == Kind::Comparison || matches_word(operator, &["LIKE"]) {
            return self.value();
        }
        let negated = matches_word(operator, &["NOT"]);
        if negated {
            let next = self.expect("IN")?;
            if !matches_word(next, &["IN"]) {
                return Err(next.error(format!(
                    "expected IN after NOT, found `{}`; to negate a comparison write NOT before the field",
                    next.text
                )));
            }
        }
        if negated || matches_word(operator, &["IN", "INCLUDES", "EXCLUDES"]) {
            return self.list();
        }
        let hint = if matches_word(operator, &["IS"]) {
            " (for an empty field: `= null`, or `!= null`)"
        } else {
            ""
        };
        Err(operator.error(format!(
            "unknown operator `{}`; SOQL compares with {OPERATORS}{hint}",
            operator.text
        )))
    }

    /// `('a', 'b')`, or a sub-query `(SELECT AccountId FROM Contact ...)`.
    fn list(&mut self) -> Result<(), ConditionError> {
        let open = self.expect("`(` and a list of values")?;
        if open.kind != Kind::Open {
            return Err(open.error(format!(
                "expected a list in parentheses like ('a', 'b'), found `{}`",
                open.text
            )));
        }
        if self
            .peek()
            .is_some_and(|token| matches_word(token, &["SELECT"]))
        {
            let mut depth = 1;
            while depth > 0 {
                let Some(token) = self.advance() else {
                    return Err(open.error("this `(` is never closed".to_owned()));
                };
                match token.kind {
                    Kind::Open => depth += 1,
                    Kind::Close => depth -= 1,
                    _ => {}
                }
            }
            return Ok(());
        }
        loop {
            self.value()?;
            match self.advance() {
                Some(token) if token.kind == Kind::Comma => {}
                Some(token) if token.kind == Kind::Close => return Ok(()),
                Some(token) => {
                    return Err(token.error(format!(
                        "expected `,` or `)` in the list, found `{}`",
                        token.text
                    )));
                }
                None => return Err(open.error("this `(` is never closed".to_owned())),
            }
        }
    }

    fn value(&mut self) -> Result<(), ConditionError> {
        let token = self.expect("a value")?;
        match token.kind {
            Kind::Text | Kind::Literal => Ok(()),
            Kind::Word if is_value_word(token.text) => Ok(()),
            Kind::Word => Err(token.error(format!(
                "`{}` is not a value: text goes in single quotes ('{}'); a field cannot be compared to another field",
                token.text, token.text
            ))),
            _ => Err(token.error(format!("expected a value, found `{}`", token.text))),
        }
    }
}

/// `true`, `false`, `null` or a date literal.
fn is_value_word(word: &str) -> bool {
    let upper = word.to_ascii_uppercase();
    if ["TRUE", "FALSE", "NULL"].contains(&upper.as_str())
        || DATE_LITERALS.contains(&upper.as_str())
    {
        return true;
    }
    // LAST_N_DAYS:30, N_MONTHS_AGO:2...
    upper.split_once(':').is_some_and(|(name, number)| {
        (name.contains("_N_") || name.starts_with("N_"))
            && !number.is_empty()
            && number.bytes().all(|byte| byte.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_conditions_pass() {
        for condition in [
            "Type = 'Customer' AND KYC_Status__c = null",
            "Name != null",
            "(Type = 'Customer' OR Type = 'Partner') AND NOT Name LIKE 'Test%'",
            "Type IN ('Customer', 'Partner') AND Industry NOT IN ('Banking')",
            "Owner.Email = 'a@example.com' AND NumberOfEmployees >= -5",
            "CreatedDate = LAST_N_DAYS:30 AND LastModifiedDate < 2026-11-25T20:49:32Z",
            "CALENDAR_YEAR(CreatedDate) = 2026",
            "Id IN (SELECT AccountId FROM Contact WHERE (Email != null))",
            "Name = 'O\\'Brien' and isdeleted = FALSE",
            "Markets__c INCLUDES ('EU;US', 'UK')",
        ] {
            assert_eq!(check_condition(condition), Ok(()), "{condition}");
        }
    }

    #[test]
    fn mistakes_are_placed_and_explained() {
        let cases = [
            ("Type = 'Customer", 7, "never closed"),
            (
                "(Type = 'Customer' AND Name != null",
                0,
                "this `(` is never closed",
            ),
            ("Type = 'Customer')", 17, "closes no `(`"),
            ("Type == 'Customer'", 5, "unknown operator `==`"),
            ("KYC_Status__c IS NULL", 14, "`= null`"),
            ("Type CONTAINS 'x'", 5, "unknown operator `CONTAINS`"),
            ("Type = \"Customer\"", 7, "single quotes"),
            ("Type = Customer", 7, "('Customer')"),
            (
                "Type = 'a' AND Name = 'b' OR Id = null",
                26,
                "needs parentheses",
            ),
            ("WHERE Type = 'a'", 0, "without WHERE"),
            ("Type = 'a' LIMIT 10", 11, "only the condition"),
            (
                "Type = 'a' Name = 'b'",
                11,
                "join conditions with AND or OR",
            ),
            ("Type = 'a' AND", 14, "ends where a condition was expected"),
            ("Type IN 'a'", 8, "list in parentheses"),
            (
                "Type = 'a' AND AND Name = 'b'",
                15,
                "expected a field name, found `AND`",
            ),
            ("Type = 'a' & Name = 'b'", 11, "`&` has no meaning"),
        ];
        for (condition, offset, message) in cases {
            let error = check_condition(condition).expect_err(condition);
            assert_eq!(error.offset, offset, "{condition}: {}", error.message);
            assert!(
                error.message.contains(message),
                "{condition}: {}",
                error.message
            );
        }
    }
}
