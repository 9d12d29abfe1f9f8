//! Tokens of a SOQL statement: words, quoted strings with their escapes
//! decoded, unquoted date, datetime and number literals, punctuation.

use super::{SoqlError, Source};
use crate::salesforce::data::{self, format_datetime};

/// One piece of a `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PatternPiece {
    Literal(char),
    /// `_`: exactly one character.
    AnyOne,
    /// `%`: any run of characters.
    AnyRun,
}

/// A quoted string literal, with its escapes decoded; `pattern` keeps which
/// `%` and `_` were escaped, for `LIKE`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SoqlString {
    pub(super) text: String,
    pub(super) pattern: Vec<PatternPiece>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenKind {
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
pub(super) struct Token {
    pub(super) kind: TokenKind,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) fn lex(source: &Source<'_>) -> Result<Vec<Token>, SoqlError> {
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
pub(super) fn lex_string(
    source: &Source<'_>,
    start: usize,
) -> Result<(SoqlString, usize), SoqlError> {
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
