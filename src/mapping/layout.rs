//! The YAML mistakes CRM admins make most, found line by line so that each
//! gets a message saying what to write instead, at the exact place: a
//! template not quoted, a `: ` inside a value not quoted, a line indented
//! to no level of the lines around it. A YAML parser reports these late
//! (at the next line, or as a "mapping values are not allowed" puzzle) or
//! not at all: `key: {{ Name }}` is valid YAML, a map inside a map.

use crate::text::Position;

/// One line with content: not blank, not only a comment, not inside a
/// block scalar (`|` or `>`).
#[derive(Debug, Clone)]
struct Line<'a> {
    /// 1-based.
    number: usize,
    /// Spaces before the content.
    indent: usize,
    /// The content after the indentation, comment removed, trimmed.
    content: &'a str,
}

impl Line<'_> {
    fn position(&self, offset_in_content: usize) -> Position {
        Position {
            line: self.number,
            column: self.indent + self.content[..offset_in_content].chars().count() + 1,
        }
    }

    /// `(key, offset of the value in content, value)` for a `key: value`
    /// line (after any `- ` list markers); the value may be empty.
    fn key_value(&self) -> Option<(&str, usize, &str)> {
        let start = list_markers(self.content);
        let rest = &self.content[start..];
        if rest.starts_with(['{', '[', '"', '\'']) {
            return None;
        }
        let colon = rest
            .find(": ")
            .or_else(|| rest.ends_with(':').then(|| rest.len() - 1))?;
        let key = rest[..colon].trim_end();
        let after = colon + 1;
        let skipped = rest[after..].len() - rest[after..].trim_start().len();
        let value_offset = start + after + skipped;
        Some((key, value_offset, &self.content[value_offset..]))
    }

    /// The key of a `key: value` line, else the content.
    fn name(&self) -> &str {
        self.key_value()
            .map_or(self.content, |(key, _, _)| key)
            .trim_start_matches("- ")
    }

    /// Whether the next lines are this line's block: `key:` with nothing
    /// after it, or a `- ` list item.
    fn opens_block(&self) -> bool {
        list_markers(self.content) > 0
            || self
                .key_value()
                .is_some_and(|(_, _, value)| value.is_empty())
    }
}

/// The length of the `- ` markers a line starts with.
fn list_markers(content: &str) -> usize {
    let mut offset = 0;
    loop {
        let rest = &content[offset..];
        if rest == "-" {
            return content.len();
        }
        if !rest.starts_with("- ") {
            return offset;
        }
        offset += 2 + (rest[2..].len() - rest[2..].trim_start().len());
    }
}

/// `text` without a trailing comment: a `#` after a space, outside quotes.
fn without_comment(text: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (index, character) in text.char_indices() {
        match (quote, character) {
            (None, '"' | '\'') => quote = Some(character),
            (Some(open), _) if character == open => quote = None,
            (None, '#') if previous == ' ' => return text[..index].trim_end(),
            _ => {}
        }
        previous = character;
    }
    text.trim_end()
}

/// Whether a value starts a block scalar (`|`, `>-`, `|+2`...).
fn starts_block_scalar(value: &str) -> bool {
    let mut characters = value.chars();
    matches!(characters.next(), Some('|' | '>'))
        && characters.all(|character| matches!(character, '-' | '+' | '0'..='9'))
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    // Indentation of the line that opened a block scalar being skipped.
    let mut block_scalar: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start_matches(' ');
        let indent = raw.len() - trimmed.len();
        if let Some(opener) = block_scalar {
            if trimmed.trim().is_empty() || indent > opener {
                continue;
            }
            block_scalar = None;
        }
        let content = without_comment(trimmed);
        if content.is_empty() || content.starts_with('#') || content == "---" {
            continue;
        }
        let line = Line {
            number: index + 1,
            indent,
            content,
        };
        if line
            .key_value()
            .is_some_and(|(_, _, value)| starts_block_scalar(value))
        {
            block_scalar = Some(indent);
        }
        lines.push(line);
    }
    lines
}

/// Values that YAML would misread, on every line: a template not quoted
/// (`key: {{ Name }}` is a map to YAML) and a `: ` inside a value not
/// quoted (YAML takes it for a second key).
pub(crate) fn unquoted_values(text: &str) -> Vec<(Position, String)> {
    let mut problems = Vec::new();
    for line in lines(text) {
        let Some((key, offset, value)) = line.key_value() else {
            continue;
        };
        if value.starts_with("{{") || value.starts_with("{%") {
            problems.push((
                line.position(offset),
                format!(
                    "a value starting with `{}` must be quoted, or YAML reads it as a map; write `{key}: {}`",
                    &value[..2],
                    quoted(value)
                ),
            ));
            continue;
        }
        // YAML reserves these; a value cannot start with one unquoted.
        if let Some(reserved) = value
            .chars()
            .next()
            .filter(|first| matches!(first, '@' | '`' | '%'))
        {
            problems.push((
                line.position(offset),
                format!(
                    "a value starting with `{reserved}` must be quoted; write `{key}: {}`",
                    quoted(value)
                ),
            ));
            continue;
        }
        if value.is_empty() || value.starts_with(['"', '\'', '{', '[', '|', '>', '&', '*', '!']) {
            continue;
        }
        let inner = value
            .find(": ")
            .or_else(|| value.ends_with(':').then(|| value.len() - 1));
        if let Some(colon) = inner {
            problems.push((
                line.position(offset + colon),
                format!(
                    "`: ` inside a value that is not quoted reads as a second key; quote the whole value: `{key}: {}`",
                    quoted(value)
                ),
            ));
        }
    }
    problems
}

/// `value` in double quotes, or in single quotes when it holds a double one.
fn quoted(value: &str) -> String {
    if value.contains('"') {
        format!("'{}'", value.replace('\'', "''"))
    } else {
        format!("\"{value}\"")
    }
}

/// What a YAML syntax error most likely is, at the line that is wrong: the
/// first of a line indented to no level around it, a quote or a `{`/`[`
/// not closed on its line, a key without its `: `. Only asked once the
/// parser failed: some of these are valid YAML in rare forms (a quoted
/// value continued on the next line).
pub(crate) fn syntax_hint(text: &str) -> Option<(Position, String)> {
    let lines = lines(text);
    [indentation(&lines), unclosed(&lines), missing_colon(&lines)]
        .into_iter()
        .flatten()
        .min_by_key(|(position, _)| *position)
}

/// The first line indented to no level of the lines around it: deeper
/// than the line above when that line holds a value (not a block), or
/// between two levels when going back out.
fn indentation(lines: &[Line]) -> Option<(Position, String)> {
    // Indentations of the blocks open at this point, innermost last, with
    // the line that set each one and its key.
    let mut open: Vec<(usize, usize, &str)> = Vec::new();
    let mut previous: Option<&Line> = None;
    // The indentation the previous line went back out from, if it did.
    let mut left: Option<usize> = None;
    for line in lines {
        let name = line.name();
        let top = open.last().copied();
        let mut dedent_from = None;
        match (top, previous) {
            (None, _) => open.push((line.indent, line.number, name)),
            (Some((level, _, _)), Some(previous)) if line.indent > level => {
                if previous.opens_block() && line.indent > previous.indent {
                    open.push((line.indent, line.number, name));
                } else if left == Some(line.indent) {
                    // The line above went out one level and this one comes
                    // back: the line above is the one out of place.
                    return Some((
                        previous.position(0),
                        format!(
                            "`{}` is indented by {} spaces, less than the keys around it ({}); indent it by {} spaces",
                            previous.name(),
                            previous.indent,
                            line.indent,
                            line.indent
                        ),
                    ));
                } else {
                    return Some((
                        line.position(0),
                        format!(
                            "`{name}` is indented by {} spaces, deeper than line {} ({} spaces), which holds a value rather than a block; indent it by {level} spaces like the keys beside it",
                            line.indent, previous.number, previous.indent
                        ),
                    ));
                }
            }
            (Some((level, _, _)), _) if line.indent < level => {
                dedent_from = Some(level);
                while open
                    .last()
                    .is_some_and(|(level, _, _)| line.indent < *level)
                {
                    open.pop();
                }
                match open.last() {
                    Some((outer, _, _)) if *outer == line.indent => {}
                    Some((outer, outer_line, outer_name)) => {
                        return Some((
                            line.position(0),
                            format!(
                                "`{name}` is indented by {} spaces, which lines up with no key above it; keys of one block line up exactly: indent it by {level} spaces to keep it in the block above, or by {outer} to line it up with `{outer_name}` (line {outer_line})",
                                line.indent
                            ),
                        ));
                    }
                    None => open.push((line.indent, line.number, name)),
                }
            }
            _ => {}
        }
        left = dedent_from;
        previous = Some(line);
    }
    None
}

/// The first value whose quote, `{` or `[` is not closed on its line.
fn unclosed(lines: &[Line]) -> Option<(Position, String)> {
    lines.iter().find_map(|line| {
        let (key, offset, value) = line.key_value()?;
        let close = match value.chars().next()? {
            '"' | '\'' if closing_quote(value).is_none() => value[..1].to_owned(),
            '{' | '[' if !balanced(value) => {
                if value.starts_with('{') { "}" } else { "]" }.to_owned()
            }
            _ => return None,
        };
        let opened = &value[..1];
        Some((
            line.position(offset),
            format!(
                "the `{opened}` that starts the value of `{key}` is not closed on its line; end the value with `{close}`"
            ),
        ))
    })
}

/// The byte offset of the quote closing the one `value` starts with.
fn closing_quote(value: &str) -> Option<usize> {
    let quote = value.chars().next()?;
    let mut characters = value.char_indices().skip(1).peekable();
    while let Some((index, character)) = characters.next() {
        match (quote, character) {
            ('"', '\\') => {
                characters.next();
            }
            ('\'', '\'') if characters.peek().is_some_and(|(_, next)| *next == '\'') => {
                characters.next();
            }
            _ if character == quote => return Some(index),
            _ => {}
        }
    }
    None
}

/// Whether every `{` and `[` of `value` (outside quotes) is closed.
fn balanced(value: &str) -> bool {
    let mut depth = 0i32;
    let mut quote = None;
    for character in value.chars() {
        match (quote, character) {
            (None, '"' | '\'') => quote = Some(character),
            (Some(open), _) if character == open => quote = None,
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// The first line that is not `key: value`: a key with no space after its
/// `:`, or a line with no `:` at all (often a value put on its own line).
fn missing_colon(lines: &[Line]) -> Option<(Position, String)> {
    let mut previous: Option<&Line> = None;
    for line in lines {
        let content = &line.content[list_markers(line.content)..];
        let plain = !content.is_empty() && !content.starts_with(['"', '\'', '{', '[', '-']);
        if plain && line.key_value().is_none() {
            if let Some(colon) = content.find(':') {
                let (key, value) = (&content[..colon], &content[colon + 1..]);
                return Some((
                    line.position(line.content.len() - content.len() + colon),
                    format!("put a space after the `:` of `{key}`: write `{key}: {value}`"),
                ));
            }
            let message = match previous.and_then(Line::key_value) {
                Some((key, _, "")) if previous.is_some_and(|above| above.indent == line.indent) => {
                    format!(
                        "`{content}` is not a `key: value` line; if it is the value of `{key}` above, write it on that line: `{key}: {content}`"
                    )
                }
                _ => format!(
                    "`{content}` is not a `key: value` line; a key is followed by `: ` and its value"
                ),
            };
            return Some((line.position(0), message));
        }
        previous = Some(line);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(problems: &[(Position, String)]) -> Vec<String> {
        problems
            .iter()
            .map(|(position, message)| format!("{position}: {message}"))
            .collect()
    }

    #[test]
    fn unquoted_templates_and_colons_are_found_with_their_fix() {
        let text = "portal:\n  company: {{ Name }}   # the name\n  status: Sent: waiting\n  ok: \"{{ Id }}\"\n  url: https://x.example/a?b=c\n  select: >\n    a: b\n  map: { a: b }\n  handle: @acme\n";
        assert_eq!(
            at(&unquoted_values(text)),
            [
                "2:12: a value starting with `{{` must be quoted, or YAML reads it as a map; write `company: \"{{ Name }}\"`",
                "3:15: `: ` inside a value that is not quoted reads as a second key; quote the whole value: `status: \"Sent: waiting\"`",
                "9:11: a value starting with `@` must be quoted; write `handle: \"@acme\"`",
            ]
        );
    }

    #[test]
    fn indentation_points_at_the_line_that_is_wrong() {
        let deeper = "a:\n  b: 1\n   c: 2\n";
        let (position, message) = syntax_hint(deeper).unwrap();
        assert_eq!(position, Position { line: 3, column: 4 });
        assert!(
            message.starts_with("`c` is indented by 3 spaces, deeper than line 2"),
            "{message}"
        );

        let between = "a:\n    b: 1\n  c: 2\nd: 3\n";
        let (position, message) = syntax_hint(between).unwrap();
        assert_eq!(position, Position { line: 3, column: 3 });
        assert!(
            message
                .contains("indent it by 4 spaces to keep it in the block above, or by 0 to line it up with `a` (line 1)"),
            "{message}"
        );

        let back_in = "a:\n  b:\n    c: 1\n  d: 2\n    e: 3\n";
        let (position, message) = syntax_hint(back_in).unwrap();
        assert_eq!(position, Position { line: 4, column: 3 });
        assert_eq!(
            message,
            "`d` is indented by 2 spaces, less than the keys around it (4); indent it by 4 spaces"
        );

        let fine = "a:\n  b:\n    c: 1\n  d: |\n     text\n   more: text\ne:\n  - f: 1\n    g: 2\n";
        assert_eq!(syntax_hint(fine), None);
    }

    #[test]
    fn unclosed_values_and_missing_colons_are_named_with_their_fix() {
        let hint = |text: &str| {
            let (position, message) = syntax_hint(text).unwrap();
            format!("{position}: {message}")
        };
        assert_eq!(
            hint("a:\n  b: \"open\n  c: 'x''y'\n"),
            "2:6: the `\"` that starts the value of `b` is not closed on its line; end the value with `\"`"
        );
        assert_eq!(
            hint("a: { x: 1\nb: 2\n"),
            "1:4: the `{` that starts the value of `a` is not closed on its line; end the value with `}`"
        );
        assert_eq!(
            hint("a:\n  b:\"x\"\n"),
            "2:4: put a space after the `:` of `b`: write `b: \"x\"`"
        );
        assert_eq!(
            hint("a:\nvalue\n"),
            "2:1: `value` is not a `key: value` line; if it is the value of `a` above, write it on that line: `a: value`"
        );
        assert_eq!(
            hint("a: 1\nb 2\n"),
            "2:1: `b 2` is not a `key: value` line; a key is followed by `: ` and its value"
        );
        assert_eq!(syntax_hint("a: \"x\\\" y\"\nb: [1, {c: 2}]\n"), None);
    }
}
