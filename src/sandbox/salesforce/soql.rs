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

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::data::{
    self, FieldDef, FieldType, ObjectSchema, Row, Table, format_datetime, normalize_id,
};

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

// ---------------------------------------------------------------------------
// Lexer

/// One piece of a `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
enum PatternPiece {
    Literal(char),
    /// `_`: exactly one character.
    AnyOne,
    /// `%`: any run of characters.
    AnyRun,
}

/// A quoted string literal, with its escapes decoded; `pattern` keeps which
/// `%` and `_` were escaped, for `LIKE`.
#[derive(Debug, Clone, PartialEq)]
struct SoqlString {
    text: String,
    pattern: Vec<PatternPiece>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Word(String),
    Str(SoqlString),
    Number(f64),
    /// Canonical wire form, so it compares with stored values as text.
    DateTime(String),
    Date(String),
    Comma,
    Dot,
    OpenParen,
    CloseParen,
    Compare(CompareOp),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

fn lex(source: &Source<'_>) -> Result<Vec<Token>, SoqlError> {
    let text = source.text;
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        let start = position;
        let kind = match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {
                position += 1;
                continue;
            }
            b',' => {
                position += 1;
                TokenKind::Comma
            }
            b'.' => {
                position += 1;
                TokenKind::Dot
            }
            b'(' => {
                position += 1;
                TokenKind::OpenParen
            }
            b')' => {
                position += 1;
                TokenKind::CloseParen
            }
            b'=' => {
                position += 1;
                TokenKind::Compare(CompareOp::Equal)
            }
            b'!' if bytes.get(position + 1) == Some(&b'=') => {
                position += 2;
                TokenKind::Compare(CompareOp::NotEqual)
            }
            b'<' => match bytes.get(position + 1) {
                Some(b'>') => {
                    position += 2;
                    TokenKind::Compare(CompareOp::NotEqual)
                }
                Some(b'=') => {
                    position += 2;
                    TokenKind::Compare(CompareOp::LessOrEqual)
                }
                _ => {
                    position += 1;
                    TokenKind::Compare(CompareOp::Less)
                }
            },
            b'>' => {
                if bytes.get(position + 1) == Some(&b'=') {
                    position += 2;
                    TokenKind::Compare(CompareOp::GreaterOrEqual)
                } else {
                    position += 1;
                    TokenKind::Compare(CompareOp::Greater)
                }
            }
            b'\'' => {
                let (literal, end) = lex_string(source, position)?;
                position = end;
                TokenKind::Str(literal)
            }
            b'0'..=b'9' => {
                position = scan_while(bytes, position, |byte| {
                    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b':' | b'+' | b'-')
                });
                classify_literal(source, start, &text[start..position])?
            }
            b'-' | b'+' if bytes.get(position + 1).is_some_and(u8::is_ascii_digit) => {
                position = scan_while(bytes, position + 1, |byte| {
                    byte.is_ascii_digit() || byte == b'.'
                });
                number(source, start, &text[start..position])?
            }
            byte if byte.is_ascii_alphabetic() || byte == b'_' => {
                position = scan_while(bytes, position, |byte| {
                    byte.is_ascii_alphanumeric() || byte == b'_'
                });
                TokenKind::Word(text[start..position].to_owned())
            }
            _ => {
                let character = text[start..].chars().next().unwrap_or(' ');
                return Err(source.malformed(start, format!("unexpected token: '{character}'")));
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: position,
        });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(tokens)
}

fn scan_while(bytes: &[u8], mut position: usize, accept: impl Fn(u8) -> bool) -> usize {
    while position < bytes.len() && accept(bytes[position]) {
        position += 1;
    }
    position
}

/// An unquoted literal starting with a digit: a date, a datetime or a number.
fn classify_literal(source: &Source<'_>, start: usize, word: &str) -> Result<TokenKind, SoqlError> {
    if word.contains(['T', 't']) {
        return data::parse_datetime(word)
            .map(|instant| TokenKind::DateTime(format_datetime(instant)))
            .ok_or_else(|| {
                source.malformed(
                    start,
                    format!(
                        "line 1:{start} no viable alternative at character '{word}': \
                         datetime literals look like 2026-11-25T20:49:32Z"
                    ),
                )
            });
    }
    if word.len() == 10 && word.as_bytes()[4] == b'-' {
        return data::parse_date(word)
            .map(|_| TokenKind::Date(word.to_owned()))
            .ok_or_else(|| source.malformed(start, format!("unexpected token: '{word}'")));
    }
    number(source, start, word)
}

fn number(source: &Source<'_>, start: usize, word: &str) -> Result<TokenKind, SoqlError> {
    let digits = word.trim_start_matches(['-', '+']);
    let well_formed = !digits.is_empty()
        && digits
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
        && digits.matches('.').count() <= 1;
    match word.parse::<f64>() {
        Ok(value) if well_formed => Ok(TokenKind::Number(value)),
        _ => Err(source.malformed(start, format!("unexpected token: '{word}'"))),
    }
}

/// A single-quoted string with backslash escapes; returns it and the end.
fn lex_string(source: &Source<'_>, start: usize) -> Result<(SoqlString, usize), SoqlError> {
    let text = source.text;
    let mut literal = SoqlString {
        text: String::new(),
        pattern: Vec::new(),
    };
    let mut characters = text[start + 1..].char_indices();
    while let Some((offset, character)) = characters.next() {
        let at = start + 1 + offset;
        match character {
            '\'' => return Ok((literal, at + 1)),
            '\\' => {
                let Some((_, escaped)) = characters.next() else {
                    break;
                };
                let decoded = match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    '\'' | '"' | '\\' => escaped,
                    // Escaped wildcards are literal characters in LIKE.
                    '%' | '_' => {
                        literal.text.push('\\');
                        literal.text.push(escaped);
                        literal.pattern.push(PatternPiece::Literal(escaped));
                        continue;
                    }
                    'u' => {
                        let hex: String = characters.by_ref().take(4).map(|(_, c)| c).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                source.malformed(
                                    at,
                                    format!(
                                        "Invalid string literal: illegal unicode escape '\\u{hex}'"
                                    ),
                                )
                            })?
                    }
                    other => {
                        return Err(source.malformed(
                            at,
                            format!(
                                "Invalid string literal: illegal escape sequence '\\{other}'; \
                                 valid escapes are \\' \\\" \\\\ \\n \\t \\r \\b \\f \\uXXXX \\% \\_"
                            ),
                        ));
                    }
                };
                literal.text.push(decoded);
                literal.pattern.push(PatternPiece::Literal(decoded));
            }
            '%' => {
                literal.text.push('%');
                literal.pattern.push(PatternPiece::AnyRun);
            }
            '_' => {
                literal.text.push('_');
                literal.pattern.push(PatternPiece::AnyOne);
            }
            other => {
                literal.text.push(other);
                literal.pattern.push(PatternPiece::Literal(other));
            }
        }
    }
    Err(source.malformed(start, "unterminated string literal: a quote (') is missing"))
}

// ---------------------------------------------------------------------------
// Parser

#[derive(Debug, Clone)]
struct FieldPath {
    parts: Vec<String>,
    start: usize,
}

impl FieldPath {
    fn display(&self) -> String {
        self.parts.join(".")
    }
}

#[derive(Debug, Clone)]
enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Str(SoqlString),
    Date(String),
    DateTime(String),
}

#[derive(Debug, Clone)]
struct LiteralAt {
    literal: Literal,
    start: usize,
}

#[derive(Debug, Clone)]
enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        field: FieldPath,
        op: CompareOp,
        value: LiteralAt,
    },
    Like {
        field: FieldPath,
        pattern: LiteralAt,
    },
    In {
        field: FieldPath,
        negated: bool,
        values: Vec<LiteralAt>,
    },
}

#[derive(Debug, Clone)]
struct OrderItem {
    field: FieldPath,
    descending: bool,
    nulls_last: bool,
}

#[derive(Debug)]
struct Statement {
    select: Vec<FieldPath>,
    object: String,
    object_start: usize,
    condition: Option<Condition>,
    order: Vec<OrderItem>,
    limit: Option<usize>,
}

struct Parser<'a> {
    source: &'a Source<'a>,
    tokens: Vec<Token>,
    position: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.position]
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.position].clone();
        if self.position + 1 < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn unexpected(&self, token: &Token) -> SoqlError {
        let shown = if token.kind == TokenKind::End {
            "<EOF>".to_owned()
        } else {
            self.source.text[token.start..token.end].to_owned()
        };
        self.source
            .malformed(token.start, format!("unexpected token: '{shown}'"))
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Word(word) if word.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.advance();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            let token = self.peek().clone();
            Err(self.source.malformed(
                token.start,
                format!(
                    "unexpected token: '{}', expected {keyword}",
                    self.shown(&token)
                ),
            ))
        }
    }

    fn shown(&self, token: &Token) -> String {
        if token.kind == TokenKind::End {
            "<EOF>".to_owned()
        } else {
            self.source.text[token.start..token.end].to_owned()
        }
    }

    fn expect(&mut self, kind: &TokenKind, what: &str) -> Result<(), SoqlError> {
        if &self.peek().kind == kind {
            self.advance();
            Ok(())
        } else {
            let token = self.peek().clone();
            Err(self.source.malformed(
                token.start,
                format!(
                    "unexpected token: '{}', expected {what}",
                    self.shown(&token)
                ),
            ))
        }
    }

    fn statement(&mut self) -> Result<Statement, SoqlError> {
        self.expect_keyword("SELECT")?;
        let mut select = vec![self.field_path()?];
        while self.peek().kind == TokenKind::Comma {
            self.advance();
            select.push(self.field_path()?);
        }
        self.expect_keyword("FROM")?;
        let object_token = self.advance();
        let TokenKind::Word(object) = object_token.kind.clone() else {
            return Err(self.unexpected(&object_token));
        };
        let condition = if self.eat_keyword("WHERE") {
            Some(self.condition()?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                order.push(self.order_item()?);
                if self.peek().kind != TokenKind::Comma {
                    break;
                }
                self.advance();
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            let token = self.advance();
            match token.kind {
                TokenKind::Number(value) if value >= 0.0 && value.fract() == 0.0 => {
                    Some(value as usize)
                }
                _ => return Err(self.unexpected(&token)),
            }
        } else {
            None
        };
        let token = self.peek().clone();
        if token.kind != TokenKind::End {
            return Err(self.unexpected(&token));
        }
        Ok(Statement {
            select,
            object,
            object_start: object_token.start,
            condition,
            order,
            limit,
        })
    }

    fn field_path(&mut self) -> Result<FieldPath, SoqlError> {
        let token = self.advance();
        let TokenKind::Word(first) = token.kind.clone() else {
            return Err(self.unexpected(&token));
        };
        if is_reserved(&first) {
            return Err(self.unexpected(&token));
        }
        let mut parts = vec![first];
        while self.peek().kind == TokenKind::Dot {
            self.advance();
            let next = self.advance();
            let TokenKind::Word(part) = next.kind.clone() else {
                return Err(self.unexpected(&next));
            };
            parts.push(part);
        }
        if self.peek().kind == TokenKind::OpenParen {
            let token = self.peek().clone();
            return Err(self.source.malformed(
                token.start,
                "unexpected token: '(': functions and aggregates are not supported by the sandbox",
            ));
        }
        Ok(FieldPath {
            parts,
            start: token.start,
        })
    }

    /// A run of unary conditions joined by one kind of connective.
    fn condition(&mut self) -> Result<Condition, SoqlError> {
        let first = self.unary()?;
        let connective = if self.is_keyword("AND") {
            "AND"
        } else if self.is_keyword("OR") {
            "OR"
        } else {
            return Ok(first);
        };
        let other = if connective == "AND" { "OR" } else { "AND" };
        let mut operands = vec![first];
        loop {
            if self.eat_keyword(connective) {
                operands.push(self.unary()?);
            } else if self.is_keyword(other) {
                // SOQL has no precedence between AND and OR: it asks for parentheses.
                let token = self.peek().clone();
                return Err(self.source.malformed(
                    token.start,
                    format!(
                        "unexpected token: '{}': mixing AND and OR needs parentheses",
                        self.shown(&token)
                    ),
                ));
            } else {
                break;
            }
        }
        Ok(if connective == "AND" {
            Condition::All(operands)
        } else {
            Condition::Any(operands)
        })
    }

    fn unary(&mut self) -> Result<Condition, SoqlError> {
        if self.eat_keyword("NOT") {
            return Ok(Condition::Not(Box::new(self.unary()?)));
        }
        if self.peek().kind == TokenKind::OpenParen {
            self.advance();
            let inner = self.condition()?;
            self.expect(&TokenKind::CloseParen, "')'")?;
            return Ok(inner);
        }
        let field = self.field_path()?;
        if self.eat_keyword("LIKE") {
            let pattern = self.literal()?;
            return Ok(Condition::Like { field, pattern });
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            self.expect(&TokenKind::OpenParen, "'('")?;
            let mut values = vec![self.literal()?];
            while self.peek().kind == TokenKind::Comma {
                self.advance();
                values.push(self.literal()?);
            }
            self.expect(&TokenKind::CloseParen, "')'")?;
            return Ok(Condition::In {
                field,
                negated,
                values,
            });
        }
        if negated {
            let token = self.peek().clone();
            return Err(self.source.malformed(
                token.start,
                format!("unexpected token: '{}', expected IN", self.shown(&token)),
            ));
        }
        let token = self.advance();
        let TokenKind::Compare(op) = token.kind else {
            return Err(self.source.malformed(
                token.start,
                format!(
                    "unexpected token: '{}', expected an operator (= != <> < <= > >= LIKE IN NOT IN)",
                    self.shown(&token)
                ),
            ));
        };
        let value = self.literal()?;
        Ok(Condition::Compare { field, op, value })
    }

    fn literal(&mut self) -> Result<LiteralAt, SoqlError> {
        let token = self.advance();
        let literal = match token.kind.clone() {
            TokenKind::Str(text) => Literal::Str(text),
            TokenKind::Number(value) => Literal::Number(value),
            TokenKind::Date(date) => Literal::Date(date),
            TokenKind::DateTime(instant) => Literal::DateTime(instant),
            TokenKind::Word(word) if word.eq_ignore_ascii_case("null") => Literal::Null,
            TokenKind::Word(word) if word.eq_ignore_ascii_case("true") => Literal::Bool(true),
            TokenKind::Word(word) if word.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => return Err(self.unexpected(&token)),
        };
        Ok(LiteralAt {
            literal,
            start: token.start,
        })
    }

    fn order_item(&mut self) -> Result<OrderItem, SoqlError> {
        let field = self.field_path()?;
        let descending = if self.eat_keyword("DESC") {
            true
        } else {
            self.eat_keyword("ASC");
            false
        };
        // Salesforce puts nulls first ascending and last descending.
        let mut nulls_last = descending;
        if self.eat_keyword("NULLS") {
            if self.eat_keyword("FIRST") {
                nulls_last = false;
            } else if self.eat_keyword("LAST") {
                nulls_last = true;
            } else {
                let token = self.peek().clone();
                return Err(self.source.malformed(
                    token.start,
                    format!(
                        "unexpected token: '{}', expected FIRST or LAST",
                        self.shown(&token)
                    ),
                ));
            }
        }
        Ok(OrderItem {
            field,
            descending,
            nulls_last,
        })
    }
}

/// Words that end a field list or start a clause, never field names.
fn is_reserved(word: &str) -> bool {
    const RESERVED: &[&str] = &[
        "SELECT", "FROM", "WHERE", "ORDER", "BY", "LIMIT", "AND", "OR", "NOT", "LIKE", "IN",
        "NULL", "TRUE", "FALSE", "ASC", "DESC", "NULLS",
    ];
    RESERVED
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(word))
}

// ---------------------------------------------------------------------------
// Resolution against the schema

/// Where a selected or filtered value lives.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    /// A field of the queried row.
    Own { field: String },
    /// A field of the row a reference points to (`Owner.Email`).
    Related {
        reference_field: String,
        relationship: String,
        target_object: &'static str,
        field: String,
    },
}

#[derive(Debug, Clone)]
struct Resolved {
    column: Column,
    field_type: FieldType,
}

/// A filter value checked against its field's type.
#[derive(Debug, Clone)]
enum Operand {
    Null,
    Bool(bool),
    Number(f64),
    /// Lower-cased, for case-insensitive text comparison.
    Text(String),
    /// An 18-char Id, or the raw text when it is not a valid Id.
    Id(String),
    /// Dates and datetimes in wire form: text order is time order.
    Instant(String),
}

#[derive(Debug, Clone)]
enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        column: Resolved,
        op: CompareOp,
        operand: Operand,
    },
    Like {
        column: Resolved,
        pattern: Vec<PatternPiece>,
    },
    In {
        column: Resolved,
        negated: bool,
        operands: Vec<Operand>,
    },
}

#[derive(Debug, Clone)]
struct Sort {
    column: Resolved,
    descending: bool,
    nulls_last: bool,
}

/// Which table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Account,
    User,
}

/// A parsed query whose every field is known to exist: ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) target: Target,
    object: &'static str,
    select: Vec<Resolved>,
    filter: Option<Filter>,
    order: Vec<Sort>,
    pub(crate) limit: Option<usize>,
}

/// The schemas a query may name.
pub(crate) struct Schemas<'a> {
    pub(crate) account: &'a ObjectSchema,
    pub(crate) user: &'a ObjectSchema,
}

impl Schemas<'_> {
    fn object(&self, name: &str) -> Option<(&ObjectSchema, Target)> {
        if name.eq_ignore_ascii_case("Account") {
            Some((self.account, Target::Account))
        } else if name.eq_ignore_ascii_case("User") {
            Some((self.user, Target::User))
        } else {
            None
        }
    }
}

/// Parses `text` and checks it against the schemas.
pub(crate) fn compile(text: &str, schemas: &Schemas<'_>) -> Result<Query, SoqlError> {
    let source = Source { text };
    if text.chars().count() > MAX_STATEMENT_CHARACTERS {
        return Err(SoqlError {
            code: "MALFORMED_QUERY",
            message: format!(
                "SOQL statements cannot be longer than {MAX_STATEMENT_CHARACTERS} characters; \
                 this one has {}. Split the query.",
                text.chars().count()
            ),
        });
    }
    let tokens = lex(&source)?;
    let mut parser = Parser {
        source: &source,
        tokens,
        position: 0,
    };
    let statement = parser.statement()?;
    let Some((schema, target)) = schemas.object(&statement.object) else {
        return Err(source.error(
            "INVALID_TYPE",
            statement.object_start,
            format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, \
                 be sure to append the '__c' after the entity name. Please reference your WSDL or \
                 the describe call for the appropriate names.",
                statement.object
            ),
        ));
    };
    let resolver = Resolver {
        source: &source,
        schema,
        schemas,
    };
    let mut select = Vec::with_capacity(statement.select.len());
    for path in &statement.select {
        let resolved = resolver.resolve(path)?;
        if select
            .iter()
            .any(|existing: &Resolved| existing.column == resolved.column)
        {
            return Err(source.malformed(
                path.start,
                format!("duplicate field selected: {}", path.display()),
            ));
        }
        select.push(resolved);
    }
    let filter = statement
        .condition
        .as_ref()
        .map(|condition| resolver.filter(condition))
        .transpose()?;
    let order = statement
        .order
        .iter()
        .map(|item| {
            let (field, column) = resolver.resolve_with_definition(&item.field)?;
            if !field_sortable(field) {
                return Err(source.error(
                    "INVALID_FIELD",
                    item.field.start,
                    format!("field '{}' can not be sorted in a query call", field.name),
                ));
            }
            Ok(Sort {
                column,
                descending: item.descending,
                nulls_last: item.nulls_last,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Query {
        target,
        object: schema.name,
        select,
        filter,
        order,
        limit: statement.limit,
    })
}

/// Long text areas cannot be filtered or sorted, like in Salesforce.
fn field_sortable(field: &FieldDef) -> bool {
    field.field_type != FieldType::Textarea || field.length <= 255
}

struct Resolver<'a> {
    source: &'a Source<'a>,
    schema: &'a ObjectSchema,
    schemas: &'a Schemas<'a>,
}

impl Resolver<'_> {
    fn resolve(&self, path: &FieldPath) -> Result<Resolved, SoqlError> {
        self.resolve_with_definition(path)
            .map(|(_, resolved)| resolved)
    }

    fn resolve_with_definition(
        &self,
        path: &FieldPath,
    ) -> Result<(&FieldDef, Resolved), SoqlError> {
        let no_such_column = |name: &str, entity: &str| {
            self.source.error(
                "INVALID_FIELD",
                path.start,
                format!(
                    "No such column '{name}' on entity '{entity}'. If you are attempting to use a \
                     custom field, be sure to append the '__c' after the custom field name. Please \
                     reference your WSDL or the describe call for the appropriate names."
                ),
            )
        };
        // A leading object name is allowed: `Account.Name`.
        let parts: &[String] = match path.parts.as_slice() {
            [object, rest @ ..]
                if !rest.is_empty() && object.eq_ignore_ascii_case(self.schema.name) =>
            {
                rest
            }
            parts => parts,
        };
        match parts {
            [name] => {
                let field = self
                    .schema
                    .field(name)
                    .ok_or_else(|| no_such_column(name, self.schema.name))?;
                Ok((
                    field,
                    Resolved {
                        column: Column::Own {
                            field: field.name.clone(),
                        },
                        field_type: field.field_type,
                    },
                ))
            }
            [relationship, name] => {
                let reference = self.schema.relationship(relationship).ok_or_else(|| {
                    self.source.error(
                        "INVALID_FIELD",
                        path.start,
                        format!(
                            "Didn't understand relationship '{relationship}' in field path. If you \
                             are attempting to use a custom relationship, be sure to append the \
                             '__r' after the custom relationship name. Please reference your WSDL \
                             or the describe call for the appropriate names."
                        ),
                    )
                })?;
                let target_name = reference.reference_to.unwrap_or("User");
                let (target_schema, _) = self
                    .schemas
                    .object(target_name)
                    .expect("every reference points to a served object");
                let field = target_schema
                    .field(name)
                    .ok_or_else(|| no_such_column(name, target_schema.name))?;
                Ok((
                    field,
                    Resolved {
                        column: Column::Related {
                            reference_field: reference.name.clone(),
                            relationship: reference
                                .relationship_name
                                .unwrap_or(target_name)
                                .to_owned(),
                            target_object: target_schema.name,
                            field: field.name.clone(),
                        },
                        field_type: field.field_type,
                    },
                ))
            }
            _ => Err(self.source.error(
                "INVALID_FIELD",
                path.start,
                format!(
                    "Didn't understand relationship '{}' in field path. The sandbox follows one \
                     relationship (Owner.Email).",
                    parts[..parts.len() - 1].join(".")
                ),
            )),
        }
    }

    fn filter(&self, condition: &Condition) -> Result<Filter, SoqlError> {
        Ok(match condition {
            Condition::All(operands) => Filter::All(
                operands
                    .iter()
                    .map(|operand| self.filter(operand))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Any(operands) => Filter::Any(
                operands
                    .iter()
                    .map(|operand| self.filter(operand))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Not(inner) => Filter::Not(Box::new(self.filter(inner)?)),
            Condition::Compare { field, op, value } => {
                let column = self.filterable(field)?;
                let operand = self.operand(field, &column, value)?;
                if matches!(operand, Operand::Bool(_))
                    && !matches!(op, CompareOp::Equal | CompareOp::NotEqual)
                {
                    return Err(self.source.error(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        value.start,
                        format!("invalid operator on boolean field '{}'", field.display()),
                    ));
                }
                Filter::Compare {
                    column,
                    op: *op,
                    operand,
                }
            }
            Condition::Like { field, pattern } => {
                let column = self.filterable(field)?;
                if !column.field_type.is_text() && !column.field_type.is_id() {
                    return Err(self.source.error(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        field.start,
                        format!(
                            "LIKE is only valid on text fields; '{}' is of type {}",
                            field.display(),
                            column.field_type.describe_name()
                        ),
                    ));
                }
                let Literal::Str(text) = &pattern.literal else {
                    return Err(self.source.malformed(
                        pattern.start,
                        "LIKE needs a quoted pattern, e.g. Name LIKE 'Acme%'",
                    ));
                };
                Filter::Like {
                    column,
                    pattern: lowercase_pattern(&text.pattern),
                }
            }
            Condition::In {
                field,
                negated,
                values,
            } => {
                let column = self.filterable(field)?;
                let operands = values
                    .iter()
                    .map(|value| self.operand(field, &column, value))
                    .collect::<Result<_, _>>()?;
                Filter::In {
                    column,
                    negated: *negated,
                    operands,
                }
            }
        })
    }

    fn filterable(&self, path: &FieldPath) -> Result<Resolved, SoqlError> {
        let (field, resolved) = self.resolve_with_definition(path)?;
        if !field_sortable(field) {
            return Err(self.source.error(
                "INVALID_FIELD",
                path.start,
                format!("field '{}' can not be filtered in a query call", field.name),
            ));
        }
        Ok(resolved)
    }

    /// The literal as a value of the field's type, or Salesforce's complaint.
    fn operand(
        &self,
        path: &FieldPath,
        column: &Resolved,
        value: &LiteralAt,
    ) -> Result<Operand, SoqlError> {
        let field_type = column.field_type;
        let mismatch = || {
            let quoting = if matches!(field_type.soql_name(), "string" | "id") {
                "should be enclosed in quotes"
            } else {
                "should not be enclosed in quotes"
            };
            self.source.error(
                "INVALID_FIELD",
                value.start,
                format!(
                    "value of filter criterion for field '{}' must be of type {} and {quoting}",
                    path.display(),
                    field_type.soql_name()
                ),
            )
        };
        Ok(match (&value.literal, field_type) {
            (Literal::Null, _) => Operand::Null,
            (Literal::Str(text), field_type) if field_type.is_id() => {
                match normalize_id(&text.text) {
                    Some(id) => Operand::Id(id),
                    None => {
                        return Err(self.source.error(
                            "INVALID_QUERY_FILTER_OPERATOR",
                            value.start,
                            format!("invalid ID field: {}", text.text),
                        ));
                    }
                }
            }
            (Literal::Str(text), field_type) if field_type.is_text() => {
                Operand::Text(text.text.to_lowercase())
            }
            (Literal::Bool(flag), FieldType::Boolean) => Operand::Bool(*flag),
            (Literal::Number(number), field_type) if field_type.is_number() => {
                Operand::Number(*number)
            }
            (Literal::Date(date), FieldType::Date) => Operand::Instant(date.clone()),
            (Literal::DateTime(instant), FieldType::DateTime) => Operand::Instant(instant.clone()),
            _ => return Err(mismatch()),
        })
    }
}

fn lowercase_pattern(pattern: &[PatternPiece]) -> Vec<PatternPiece> {
    pattern
        .iter()
        .flat_map(|piece| match piece {
            PatternPiece::Literal(character) => character
                .to_lowercase()
                .map(PatternPiece::Literal)
                .collect::<Vec<_>>(),
            other => vec![other.clone()],
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Evaluation

/// Reads one column of one row; related rows come from `related`.
fn column_value<'a>(row: &'a Row, column: &Column, related: &'a Table) -> &'a Value {
    const NULL: &Value = &Value::Null;
    match column {
        Column::Own { field } => row.get(field).unwrap_or(NULL),
        Column::Related {
            reference_field,
            field,
            ..
        } => row
            .get(reference_field)
            .and_then(Value::as_str)
            .and_then(|id| related.get(id))
            .and_then(|target| target.get(field))
            .unwrap_or(NULL),
    }
}

impl Query {
    /// Whether `row` passes the WHERE clause.
    pub(crate) fn matches(&self, row: &Row, related: &Table) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| evaluate(filter, row, related))
    }

    /// Whether the query has an ORDER BY clause.
    pub(crate) fn is_sorted(&self) -> bool {
        !self.order.is_empty()
    }

    /// Sorts rows by the ORDER BY clause; the sort is stable, so rows that tie
    /// keep their Id order (the table's order).
    pub(crate) fn sort(&self, rows: &mut Vec<Arc<Row>>, related: &Table) {
        if self.order.is_empty() {
            return;
        }
        // Keys are read (and text folded) once per row, not per comparison.
        let keys: Vec<Vec<SortKey<'_>>> = rows
            .iter()
            .map(|row| {
                self.order
                    .iter()
                    .map(|sort| {
                        SortKey::of(
                            column_value(row, &sort.column.column, related),
                            sort.column.field_type,
                        )
                    })
                    .collect()
            })
            .collect();
        let mut permutation: Vec<usize> = (0..rows.len()).collect();
        permutation.sort_by(|&left, &right| {
            self.order
                .iter()
                .zip(keys[left].iter().zip(&keys[right]))
                .map(|(sort, (left, right))| sort.compare(left, right))
                .find(|ordering| ordering.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        let sorted = permutation
            .into_iter()
            .map(|index| Arc::clone(&rows[index]))
            .collect();
        *rows = sorted;
    }

    /// The record as the query answers it: `attributes`, then the selected
    /// fields in order, relationship fields nested under their relationship.
    pub(crate) fn render(&self, row: &Row, related: &Table, api_version: &str) -> Value {
        let mut record = Map::new();
        let id = row.get("Id").and_then(Value::as_str).unwrap_or_default();
        record.insert(
            "attributes".into(),
            attributes(self.object, id, api_version),
        );
        for resolved in &self.select {
            match &resolved.column {
                Column::Own { field } => {
                    record.insert(
                        field.clone(),
                        row.get(field).cloned().unwrap_or(Value::Null),
                    );
                }
                Column::Related {
                    reference_field,
                    relationship,
                    target_object,
                    field,
                } => {
                    let target =
                        row.get(reference_field)
                            .and_then(Value::as_str)
                            .and_then(|target_id| {
                                related.get(target_id).map(|target| (target_id, target))
                            });
                    let entry =
                        record
                            .entry(relationship.clone())
                            .or_insert_with(|| match target {
                                Some((target_id, _)) => {
                                    let mut nested = Map::new();
                                    nested.insert(
                                        "attributes".into(),
                                        attributes(target_object, target_id, api_version),
                                    );
                                    Value::Object(nested)
                                }
                                None => Value::Null,
                            });
                    if let (Value::Object(nested), Some((_, target))) = (entry, target) {
                        nested.insert(
                            field.clone(),
                            target.get(field).cloned().unwrap_or(Value::Null),
                        );
                    }
                }
            }
        }
        Value::Object(record)
    }
}

/// The `attributes` object of a record.
pub(crate) fn attributes(object: &str, id: &str, api_version: &str) -> Value {
    serde_json::json!({
        "type": object,
        "url": format!("/services/data/v{api_version}/sobjects/{object}/{id}"),
    })
}

fn evaluate(filter: &Filter, row: &Row, related: &Table) -> bool {
    match filter {
        Filter::All(operands) => operands
            .iter()
            .all(|operand| evaluate(operand, row, related)),
        Filter::Any(operands) => operands
            .iter()
            .any(|operand| evaluate(operand, row, related)),
        Filter::Not(inner) => !evaluate(inner, row, related),
        Filter::Compare {
            column,
            op,
            operand,
        } => {
            let value = column_value(row, &column.column, related);
            compare(value, *op, operand)
        }
        Filter::Like { column, pattern } => match column_value(row, &column.column, related) {
            Value::String(text) => {
                let lowered: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
                like(&lowered, pattern)
            }
            _ => false,
        },
        Filter::In {
            column,
            negated,
            operands,
        } => {
            let value = column_value(row, &column.column, related);
            let found = operands
                .iter()
                .any(|operand| compare(value, CompareOp::Equal, operand));
            // A null is in no list, so NOT IN keeps it.
            if *negated { !found } else { found }
        }
    }
}

/// `value op operand` with SOQL's null rules: `= null` and `!= null` test
/// presence; any other comparison with a null is false, except `!=`.
fn compare(value: &Value, op: CompareOp, operand: &Operand) -> bool {
    match (value.is_null(), operand) {
        (true, Operand::Null) => return op == CompareOp::Equal,
        (false, Operand::Null) => return op == CompareOp::NotEqual,
        (true, _) => return op == CompareOp::NotEqual,
        (false, _) => {}
    }
    let ordering = match (value, operand) {
        (Value::String(text), Operand::Text(expected)) => text
            .chars()
            .flat_map(char::to_lowercase)
            .cmp(expected.chars()),
        (Value::String(text), Operand::Id(expected))
        | (Value::String(text), Operand::Instant(expected)) => text.as_str().cmp(expected.as_str()),
        (Value::Bool(flag), Operand::Bool(expected)) => flag.cmp(expected),
        (Value::Number(number), Operand::Number(expected)) => number
            .as_f64()
            .and_then(|number| number.partial_cmp(expected))
            .unwrap_or(Ordering::Less),
        // A stored value of another type never matches (cannot happen
        // through the API, which types every write).
        _ => return op == CompareOp::NotEqual,
    };
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::LessOrEqual => ordering != Ordering::Greater,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::GreaterOrEqual => ordering != Ordering::Less,
    }
}

/// One ORDER BY value of one row, ready to compare.
#[derive(Debug)]
enum SortKey<'a> {
    Null,
    /// Text fields sort case-insensitively: folded once.
    Folded(String),
    Stored(&'a Value),
}

impl<'a> SortKey<'a> {
    fn of(value: &'a Value, field_type: FieldType) -> SortKey<'a> {
        match value {
            Value::Null => SortKey::Null,
            Value::String(text) if field_type.is_text() => SortKey::Folded(text.to_lowercase()),
            other => SortKey::Stored(other),
        }
    }
}

impl Sort {
    /// Orders two keys: nulls where the clause puts them (whatever the
    /// direction), others by value, reversed when descending.
    fn compare(&self, left: &SortKey<'_>, right: &SortKey<'_>) -> Ordering {
        let nulls = if self.nulls_last {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let ordering = match (left, right) {
            (SortKey::Null, SortKey::Null) => return Ordering::Equal,
            (SortKey::Null, _) => return nulls,
            (_, SortKey::Null) => return nulls.reverse(),
            (SortKey::Folded(left), SortKey::Folded(right)) => left.cmp(right),
            (SortKey::Stored(Value::String(left)), SortKey::Stored(Value::String(right))) => {
                left.cmp(right)
            }
            (SortKey::Stored(Value::Number(left)), SortKey::Stored(Value::Number(right))) => left
                .as_f64()
                .partial_cmp(&right.as_f64())
                .unwrap_or(Ordering::Equal),
            (SortKey::Stored(Value::Bool(left)), SortKey::Stored(Value::Bool(right))) => {
                left.cmp(right)
            }
            _ => Ordering::Equal,
        };
        if self.descending {
            ordering.reverse()
        } else {
            ordering
        }
    }
}

/// `LIKE` matching over lower-cased characters, iteratively with one
/// backtrack point (the classic wildcard algorithm: linear in practice).
fn like(text: &[char], pattern: &[PatternPiece]) -> bool {
    let (mut text_index, mut pattern_index) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while text_index < text.len() {
        match pattern.get(pattern_index) {
            Some(PatternPiece::AnyRun) => {
                backtrack = Some((pattern_index, text_index));
                pattern_index += 1;
                continue;
            }
            Some(PatternPiece::AnyOne) => {
                text_index += 1;
                pattern_index += 1;
                continue;
            }
            Some(PatternPiece::Literal(expected)) if *expected == text[text_index] => {
                text_index += 1;
                pattern_index += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((run_index, run_text_index)) => {
                pattern_index = run_index + 1;
                text_index = run_text_index + 1;
                backtrack = Some((run_index, run_text_index + 1));
            }
            None => return false,
        }
    }
    pattern[pattern_index..]
        .iter()
        .all(|piece| *piece == PatternPiece::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::salesforce::data::{account_schema, user_schema};
    use serde_json::json;

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
