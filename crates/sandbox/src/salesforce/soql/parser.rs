//! Recursive descent from tokens to a statement; nothing is checked
//! against the schema yet.

use super::lexer::{CompareOp, SoqlString, Token, TokenKind, lex};
use super::{SoqlError, Source};

/// A dotted field reference (`Owner.Email`) and where it starts.
#[derive(Debug, Clone)]
pub(super) struct FieldPath {
    pub(super) parts: Vec<String>,
    pub(super) start: usize,
}

impl FieldPath {
    pub(super) fn display(&self) -> String {
        self.parts.join(".")
    }
}

#[derive(Debug, Clone)]
pub(super) enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Str(SoqlString),
    Date(String),
    DateTime(String),
}

#[derive(Debug, Clone)]
pub(super) struct LiteralAt {
    pub(super) literal: Literal,
    pub(super) start: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Condition {
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
pub(super) struct OrderItem {
    pub(super) field: FieldPath,
    pub(super) descending: bool,
    pub(super) nulls_last: bool,
}

#[derive(Debug)]
pub(super) struct Statement {
    pub(super) select: Vec<FieldPath>,
    pub(super) object: String,
    pub(super) object_start: usize,
    pub(super) condition: Option<Condition>,
    pub(super) order: Vec<OrderItem>,
    pub(super) limit: Option<usize>,
}

/// Lexes and parses a whole statement.
pub(super) fn parse(source: &Source<'_>) -> Result<Statement, SoqlError> {
    let tokens = lex(source)?;
    Parser {
        source,
        tokens,
        position: 0,
    }
    .statement()
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
