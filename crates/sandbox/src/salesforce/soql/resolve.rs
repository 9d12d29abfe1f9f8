//! Checks a parsed statement against the schema, as Salesforce does before
//! running anything, and types every filter value by its field.

use super::lexer::{CompareOp, PatternPiece};
use super::parser::{Condition, FieldPath, Literal, LiteralAt, parse};
use super::{MAX_STATEMENT_CHARACTERS, SoqlError, Source};
use crate::salesforce::data::{FieldDef, FieldType, ObjectSchema, normalize_id};

/// Where a selected or filtered value lives.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Column {
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
pub(super) struct Resolved {
    pub(super) column: Column,
    pub(super) field_type: FieldType,
}

/// A filter value checked against its field's type.
#[derive(Debug, Clone)]
pub(super) enum Operand {
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
pub(super) enum Filter {
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
pub(super) struct Sort {
    pub(super) column: Resolved,
    pub(super) descending: bool,
    pub(super) nulls_last: bool,
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
    pub(super) object: &'static str,
    pub(super) select: Vec<Resolved>,
    pub(super) filter: Option<Filter>,
    pub(super) order: Vec<Sort>,
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
    let statement = parse(&source)?;
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
                if !column.field_type.is_text() {
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
