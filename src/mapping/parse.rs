//! Strict parsing of one mapping file: YAML with positions, then the checks
//! that need the whole file (version, names, templates, scopes).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::{Error as YamlError, MessageFormatter, UserMessageFormatter};

use super::compiled::{FieldRule, Mapping, Moment, Source};
use super::condition::check_condition;
use super::context::{CONTEXT_ROOTS, PathCheck, check_path};
use super::diagnostic::{Diagnostic, Diagnostics};
use super::layout;
use super::model::{
    FieldBlock, FieldValue, Located, MappingFile, OrderedMap, SUPPORTED_VERSION, Scalar,
};
use super::strict::{self, Node, one_of};
use super::template::{Template, is_template, position_in};
use crate::text::{Position, did_you_mean, suggestion};

/// Largest mapping file read. Real ones are a few KiB; anything near this
/// is a mistake (a log or a dump in the directory), refused before parsing
/// so it cannot cost memory or time.
pub const MAX_MAPPING_FILE_BYTES: usize = 1024 * 1024;

/// Parses and checks one mapping file; `path` names it in diagnostics and
/// gives the default `name` (its stem).
pub fn parse_mapping(path: &Path, text: &str) -> Result<Mapping, Diagnostics> {
    if text.len() > MAX_MAPPING_FILE_BYTES {
        return Err(Diagnostic::new(
            path,
            Position::START,
            format!(
                "file is {} bytes, over the {MAX_MAPPING_FILE_BYTES}-byte limit for a mapping file; is it really a mapping?",
                text.len()
            ),
        )
        .into());
    }
    let has_content = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    });
    if !has_content {
        return Err(Diagnostic::new(
            path,
            Position::START,
            format!("the file is empty; a mapping starts with `version: {SUPPORTED_VERSION}`"),
        )
        .into());
    }
    let tabs = tab_indentation(path, text);
    if !tabs.is_empty() {
        return Err(tabs);
    }
    refuse(path, layout::unquoted_values(text))?;
    // Only `true` and `false` are booleans: `yes`, `no`, `on` stay text, so
    // a picklist value `No` is not silently turned into `false`.
    let options = serde_saphyr::options! { strict_booleans: true };
    let document: Located<Node> = serde_saphyr::from_str_with_options(text, options.clone())
        .map_err(|error| Diagnostics::from(syntax_diagnostic(path, text, &error)))?;
    refuse(path, strict::check(&document))?;
    let file: MappingFile = serde_saphyr::from_str_with_options(text, options)
        .map_err(|error| Diagnostics::from(yaml_diagnostic(path, &error)))?;
    Builder {
        path,
        text,
        diagnostics: Diagnostics::default(),
        warnings: Diagnostics::default(),
    }
    .build(file)
}

/// Every problem found by a check of the whole file, as its diagnostics.
fn refuse(path: &Path, problems: Vec<(Position, String)>) -> Result<(), Diagnostics> {
    Diagnostics(
        problems
            .into_iter()
            .map(|(position, message)| Diagnostic::new(path, position, message))
            .collect(),
    )
    .into_result(())
}

/// YAML forbids tabs in indentation; say so plainly, at each one, instead of
/// the parser's "found a tab while scanning".
fn tab_indentation(path: &Path, text: &str) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let indentation = &line[..line.len() - line.trim_start().len()];
        if let Some(column) = indentation.find('\t') {
            let position = Position {
                line: index + 1,
                column: indentation[..column].chars().count() + 1,
            };
            diagnostics.push(Diagnostic::new(
                path,
                position,
                "tab character in indentation; indent with spaces",
            ));
        }
    }
    diagnostics
}

/// A YAML syntax error. The parser notices a wrong indentation where it
/// can no longer make sense of the file, often a line or more later; the
/// line that is wrong is named instead when there is one at or before it.
fn syntax_diagnostic(path: &Path, text: &str, error: &YamlError) -> Diagnostic {
    let reported = yaml_diagnostic(path, error);
    match layout::syntax_hint(text) {
        Some((position, message)) if reported.line == 0 || position.line <= reported.line => {
            Diagnostic::new(path, position, message)
        }
        _ => reported,
    }
}

fn yaml_diagnostic(path: &Path, error: &YamlError) -> Diagnostic {
    let error = error.without_snippet();
    let position = error
        .location()
        .filter(|location| location.line() > 0)
        .map_or(Position::START, |location| Position {
            line: location.line() as usize,
            column: location.column() as usize,
        });
    Diagnostic::new(path, position, yaml_message(error))
}

fn yaml_message(error: &YamlError) -> String {
    match error {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => unknown_key(field, expected),
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let mut message = format!("unknown value `{variant}`, expected {}", one_of(expected));
            message.push_str(&did_you_mean(variant, expected.iter().copied()));
            message
        }
        YamlError::SerdeMissingField { field, .. } => format!("missing key `{field}`"),
        other => UserMessageFormatter.format_message(other).into_owned(),
    }
}

fn unknown_key(key: &str, expected: &[&str]) -> String {
    match suggestion(key, expected.iter().copied()) {
        Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
        None => format!("unknown key `{key}`, expected {}", one_of(expected)),
    }
}

/// Turns the deserialized file into a [`Mapping`], collecting every problem.
struct Builder<'a> {
    path: &'a Path,
    text: &'a str,
    diagnostics: Diagnostics,
    /// Problems that do not stop the file from loading (a probable typo
    /// of a documented application field).
    warnings: Diagnostics,
}

/// Where a template is evaluated, which decides what it may read.
#[derive(Clone, Copy)]
enum Scope {
    Portal,
    Writeback(Moment),
}

impl Builder<'_> {
    fn build(mut self, file: MappingFile) -> Result<Mapping, Diagnostics> {
        if file.version.value != SUPPORTED_VERSION {
            self.problem(
                file.version.position,
                format!(
                    "unsupported mapping format version {}; this build reads version {SUPPORTED_VERSION}",
                    file.version.value
                ),
            );
        }
        let (name, name_position) = match &file.name {
            Some(name) => {
                self.check_name(name);
                (name.value.clone(), name.position)
            }
            None => (
                self.path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                Position::START,
            ),
        };
        if file.select.value.trim().is_empty() {
            self.problem(
                file.select.position,
                "`select` is empty; write the SOQL condition that picks the Accounts needing KYC",
            );
        } else if let Err(error) = check_condition(&file.select.value) {
            let position = self.position_inside(&file.select, &file.select.value, error.offset);
            self.problem(
                position,
                format!("`select` is not valid SOQL: {}", error.message),
            );
        }

        let portal = file.portal;
        let redirect_url = portal
            .redirect_url
            .as_ref()
            .and_then(|value| self.source(value, Scope::Portal));
        let custom_fields = self.sources(&portal.default_custom_fields, Scope::Portal);
        let portal_extra = self.sources(&portal.extra, Scope::Portal);

        let mut writeback = BTreeMap::new();
        let spec = file.writeback.unwrap_or_default();
        let moments = [
            (Moment::PortalCreated, &spec.on_portal_created),
            (Moment::Application, &spec.on_application),
            (Moment::CollectOpened, &spec.on_collect_opened),
        ];
        for (moment, fields) in moments {
            let rules = fields
                .iter()
                .filter_map(|(field, value)| self.field_rule(moment, field, value))
                .collect();
            writeback.insert(moment, rules);
        }

        let mapping = Mapping {
            name,
            name_position,
            file: self.path.to_path_buf(),
            object: file.object.value,
            select: file.select.value,
            select_position: file.select.position,
            portal_type: portal.kind.value,
            redirect_url,
            custom_fields,
            portal_extra,
            writeback,
            warnings: self.warnings,
        };
        self.diagnostics.into_result(mapping)
    }

    fn problem(&mut self, position: Position, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(self.path, position, message));
    }

    fn check_name(&mut self, name: &Located<String>) {
        let valid = !name.value.is_empty()
            && name.value.chars().all(|character| {
                character.is_ascii_alphanumeric() || character == '_' || character == '-'
            });
        if !valid {
            self.problem(
                name.position,
                format!(
                    "name `{}` may only use letters, digits, `_` and `-` (it names the flow in logs and metrics)",
                    name.value
                ),
            );
        }
    }

    fn sources(
        &mut self,
        entries: &OrderedMap<Located<Scalar>>,
        scope: Scope,
    ) -> Vec<(String, Source)> {
        entries
            .iter()
            .filter_map(|(key, value)| Some((key.value.clone(), self.source(value, scope)?)))
            .collect()
    }

    fn field_rule(
        &mut self,
        moment: Moment,
        field: &Located<String>,
        value: &Located<FieldValue>,
    ) -> Option<FieldRule> {
        if !is_field_name(&field.value) {
            self.problem(
                field.position,
                format!(
                    "`{}` is not a Salesforce field API name (letters, digits and `_`, e.g. `KYC_Status__c`)",
                    field.value
                ),
            );
        }
        let scope = Scope::Writeback(moment);
        match &value.value {
            FieldValue::Scalar(scalar) => {
                let scalar = Located {
                    value: scalar.clone(),
                    position: value.position,
                    span: value.span.clone(),
                };
                Some(FieldRule {
                    field: field.value.clone(),
                    position: field.position,
                    value: self.source(&scalar, scope)?,
                    map: None,
                    default: None,
                })
            }
            FieldValue::Block(block) => self.block_rule(field, block, scope),
        }
    }

    fn block_rule(
        &mut self,
        field: &Located<String>,
        block: &FieldBlock,
        scope: Scope,
    ) -> Option<FieldRule> {
        let value = self.source(&block.value, scope);
        let map = block.map.as_ref().map(|map| {
            map.iter()
                .map(|(key, output)| {
                    self.literal_only(output);
                    (key.value.clone(), output.value.0.clone(), output.position)
                })
                .collect()
        });
        let default = block.default.as_ref().map(|default| {
            self.literal_only(default);
            (default.value.0.clone(), default.position)
        });
        Some(FieldRule {
            field: field.value.clone(),
            position: field.position,
            value: value?,
            map,
            default,
        })
    }

    /// `map` outputs and `default` are fixed values, so `check --online` can
    /// prove them against the org's picklists.
    fn literal_only(&mut self, value: &Located<Scalar>) {
        if let Value::String(text) = &value.value.0
            && is_template(text)
        {
            self.problem(
                value.position,
                "`map` outputs and `default` are fixed values, not templates; put the template in `value`",
            );
        }
    }

    /// A fixed value as it is, or a compiled template.
    fn source(&mut self, value: &Located<Scalar>, scope: Scope) -> Option<Source> {
        let text = match &value.value.0 {
            Value::String(text) if is_template(text) => text,
            literal => {
                return Some(Source::Literal {
                    value: literal.clone(),
                    position: value.position,
                });
            }
        };
        let (origin, verbatim) = self.origin_of(value, text);
        match Template::compile(text, origin, verbatim) {
            Ok(template) => {
                self.check_scope(&template, scope);
                Some(Source::Template(template))
            }
            Err(error) => {
                let offset = error.range.map_or(0, |range| range.start);
                self.problem(position_in(text, origin, verbatim, offset), error.message);
                None
            }
        }
    }

    /// Where `text`, the value of `value`, starts in the file, and whether
    /// the file holds it verbatim (plain or quoted without escapes) so that
    /// positions inside it can be pointed at; else the start of the value.
    fn origin_of<T>(&self, value: &Located<T>, text: &str) -> (Position, bool) {
        let raw = self.text.get(value.span.clone()).unwrap_or_default();
        match raw.find(text) {
            Some(start) => (
                Position::of_offset(self.text, value.span.start + start),
                true,
            ),
            None => (value.position, false),
        }
    }

    /// The file position of byte `offset` of `text`, the value of `value`.
    fn position_inside<T>(&self, value: &Located<T>, text: &str, offset: usize) -> Position {
        let (origin, verbatim) = self.origin_of(value, text);
        position_in(text, origin, verbatim, offset)
    }

    fn check_scope(&mut self, template: &Template, scope: Scope) {
        let (allowed, place): (&[&str], &str) = match scope {
            Scope::Portal => (&[], "`portal:` (the portal does not exist yet)"),
            Scope::Writeback(moment) => (moment.scope(), moment.key()),
        };
        for (variable, position) in template.variables() {
            let root = variable.split('.').next().unwrap_or_default();
            if root != "now" && CONTEXT_ROOTS.contains(&root) && !allowed.contains(&root) {
                let available: Vec<String> =
                    allowed.iter().map(|name| format!("`{name}`")).collect();
                let available = if available.is_empty() {
                    String::from("Account fields and `now`")
                } else {
                    format!("Account fields, {} and `now`", available.join(", "))
                };
                self.problem(
                    *position,
                    format!("`{root}` is not available in {place}; available there: {available}"),
                );
                continue;
            }
            // Available here: the names under `portal`, `collect`, `now`
            // and `application` must be ones they hold.
            match check_path(variable) {
                PathCheck::Fine => {}
                PathCheck::Error(message) => self.problem(*position, message),
                PathCheck::Warning(message) => {
                    self.warnings
                        .push(Diagnostic::new(self.path, *position, message));
                }
            }
        }
    }
}

/// A Salesforce field API name: a letter, then letters, digits and `_`.
fn is_field_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}
