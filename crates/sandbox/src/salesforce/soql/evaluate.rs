//! Running a resolved query over rows: filters, ordering, rendering.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::lexer::{CompareOp, PatternPiece};
use super::resolve::{Column, Filter, Operand, Query, Sort};
use crate::salesforce::data::{FieldType, Row, Table};

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
fn attributes(object: &str, id: &str, api_version: &str) -> Value {
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
pub(super) fn like(text: &[char], pattern: &[PatternPiece]) -> bool {
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
