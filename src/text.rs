//! What messages about an operator's text share, for the configuration and
//! the mapping files alike: where a place is (`line:column`, counted in
//! characters) and which known name a misspelt one probably meant.

use std::fmt;

/// A place in a file: 1-based line and column, the column counted in
/// characters (a tab is one), as editors and terminals read `file:line:column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The start of a file, for problems that concern it as a whole.
    pub const START: Position = Position { line: 1, column: 1 };

    /// The position of byte `offset` in `text`. An offset past the end (or
    /// inside a character) is clamped to the nearest earlier boundary. Lines
    /// end at `\n`, so a CRLF file's `\r` ends its line without counting.
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.line, self.column)
    }
}

/// The closest of `candidates` to a misspelt `word`, when it is close enough
/// to be a plausible typo (case aside).
pub fn suggestion<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Below this Jaro-Winkler similarity two names are more likely different
    // words than a typo of each other (`redirect_ur` vs `redirect_url` is 0.98,
    // `channel` vs `type` is 0.0).
    const MINIMUM_SIMILARITY: f64 = 0.8;
    let lowered = word.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let candidate_lowered = candidate.to_lowercase();
            let similarity = strsim::jaro_winkler(&lowered, &candidate_lowered);
            // Jaro-Winkler misses two swapped letters in a short word
            // (`ulr` for `url` is 0.6): one edit away is a typo too.
            let one_edit = strsim::osa_distance(&lowered, &candidate_lowered) <= 1;
            (similarity >= MINIMUM_SIMILARITY || one_edit).then_some((candidate, similarity))
        })
        .max_by(|left, right| left.1.total_cmp(&right.1))
        .map(|(candidate, _)| candidate)
}

/// ``"; did you mean `x`?"`` when [`suggestion`] finds a plausible `x`, else
/// nothing: the tail of an "unknown ..." message.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggestion(word, candidates)
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let text = "a: é\nbb: x";
        assert_eq!(Position::of_offset(text, 0), at(1, 1));
        // "é" is two bytes; the offset after it is column 5, not 6.
        assert_eq!(Position::of_offset(text, 5), at(1, 5));
        assert_eq!(Position::of_offset(text, 6), at(2, 1));
        assert_eq!(Position::of_offset(text, 10), at(2, 5));
    }

    #[test]
    fn an_offset_inside_a_character_or_past_the_end_is_clamped() {
        let text = "a: é";
        // Byte 4 is the middle of "é": the place is the "é" itself.
        assert_eq!(Position::of_offset(text, 4), at(1, 4));
        assert_eq!(Position::of_offset(text, 99), at(1, 5));
        assert_eq!(Position::of_offset("", 0), Position::START);
    }

    #[test]
    fn crlf_line_ends_count_as_one_line_end() {
        let text = "[a]\r\nkey = 1\r\nother = 2";
        assert_eq!(
            Position::of_offset(text, text.find("key").unwrap()),
            at(2, 1)
        );
        assert_eq!(Position::of_offset(text, text.find("1").unwrap()), at(2, 7));
        // The last line has no line end at all.
        assert_eq!(Position::of_offset(text, text.find("2").unwrap()), at(3, 9));
        assert_eq!(Position::of_offset(text, text.len()), at(3, 10));
    }

    #[test]
    fn a_tab_is_one_column() {
        let text = "a:\n\tb: 1";
        assert_eq!(Position::of_offset(text, text.find('b').unwrap()), at(2, 2));
    }

    #[test]
    fn positions_display_as_line_colon_column() {
        assert_eq!(at(12, 3).to_string(), "12:3");
    }

    #[test]
    fn suggestions_only_for_plausible_typos() {
        let keys = ["type", "redirect_url", "default_custom_fields"];
        assert_eq!(suggestion("redirect_ur", keys), Some("redirect_url"));
        assert_eq!(suggestion("Redirect_URL", keys), Some("redirect_url"));
        assert_eq!(
            suggestion("default_custom_field", keys),
            Some("default_custom_fields")
        );
        assert_eq!(suggestion("locale", keys), None);
        assert_eq!(suggestion("anything", []), None);
    }

    #[test]
    fn swapped_letters_in_a_short_name_are_a_typo() {
        assert_eq!(suggestion("ulr", ["id", "link", "url"]), Some("url"));
    }

    #[test]
    fn the_closest_of_several_plausible_names_wins() {
        let keys = ["poll", "reconcile", "overlap_seconds"];
        assert_eq!(suggestion("polll", keys), Some("poll"));
        let sections = ["salesforce", "ondorse", "webhooks", "admin", "store"];
        assert_eq!(suggestion("webhook", sections), Some("webhooks"));
        assert_eq!(suggestion("Ondorse", sections), Some("ondorse"));
    }

    #[test]
    fn case_is_ignored_beyond_ascii() {
        assert_eq!(suggestion("ÉTAT", ["état", "statut"]), Some("état"));
    }

    #[test]
    fn did_you_mean_is_a_message_tail_or_nothing() {
        let keys = ["initial_delay_seconds", "max_delay_seconds"];
        assert_eq!(
            did_you_mean("initial_delay_second", keys),
            "; did you mean `initial_delay_seconds`?"
        );
        assert_eq!(did_you_mean("colour", ["salesforce", "store"]), "");
    }
}
