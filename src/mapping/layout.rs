//! The YAML mistakes CRM admins make most, found line by line so that each
//! gets a message saying what to write instead, at the exact place: a
//! template not quoted, a `: ` inside a value not quoted, a line indented
//! to no level of the lines around it. A YAML parser reports these late
//! (at the next line, or as a "mapping values are not allowed" puzzle) or
//! not at all: `key: {{ Name }}` is valid YAML, a map inside a map.

use super::diagnostic::Position;

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

/// The first line indented to no level of the lines around it: deeper
/// than the line above when that line holds a value (not a block), or
/// between two levels when going back out.
pub(crate) fn indentation(text: &str) -> Option<(Position, String)> {
    let lines = lines(text);
    // Indentations of the blocks open at this point, innermost last, with
    // the line that set each one and its key.
    let mut open: Vec<(usize, usize, &str)> = Vec::new();
    let mut previous: Option<&Line> = None;
    for line in &lines {
        let name = line
            .key_value()
            .map_or(line.content, |(key, _, _)| key)
            .trim_start_matches("- ");
        let top = open.last().copied();
        match (top, previous) {
            (None, _) => open.push((line.indent, line.number, name)),
            (Some((level, _, _)), Some(previous)) if line.indent > level => {
                if previous.opens_block() && line.indent > previous.indent {
                    open.push((line.indent, line.number, name));
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
        let text = "portal:\n  company: {{ Name }}   # the name\n  status: Sent: waiting\n  ok: \"{{ Id }}\"\n  url: https://x.example/a?b=c\n  select: >\n    a: b\n  map: { a: b }\n";
        assert_eq!(
            at(&unquoted_values(text)),
            [
                "2:12: a value starting with `{{` must be quoted, or YAML reads it as a map; write `company: \"{{ Name }}\"`",
                "3:15: `: ` inside a value that is not quoted reads as a second key; quote the whole value: `status: \"Sent: waiting\"`",
            ]
        );
    }

    #[test]
    fn indentation_points_at_the_line_that_is_wrong() {
        let deeper = "a:\n  b: 1\n   c: 2\n";
        let (position, message) = indentation(deeper).unwrap();
        assert_eq!(position, Position { line: 3, column: 4 });
        assert!(
            message.starts_with("`c` is indented by 3 spaces, deeper than line 2"),
            "{message}"
        );

        let between = "a:\n    b: 1\n  c: 2\nd: 3\n";
        let (position, message) = indentation(between).unwrap();
        assert_eq!(position, Position { line: 3, column: 3 });
        assert!(
            message
                .contains("indent it by 4 spaces to keep it in the block above, or by 0 to line it up with `a` (line 1)"),
            "{message}"
        );

        let fine = "a:\n  b:\n    c: 1\n  d: |\n     text\n   more: text\ne:\n  - f: 1\n    g: 2\n";
        assert_eq!(indentation(fine), None);
    }
}
