//! A mapping file once checked: what the sync engine, `check` and `preview`
//! run. Pure: a record (and an application) in, a portal body and field
//! values out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::context::CONTEXT_ROOTS;
use super::diagnostic::Diagnostics;
use super::model::PortalType;
use super::template::Template;
use crate::salesforce::model::Record;
use crate::text::Position;

/// Fields every query reads, whatever the templates say: the record's
/// identity and the intake cursor.
pub const ALWAYS_QUERIED: &[&str] = &["Id", "SystemModstamp"];

/// One validated mapping file.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Unique across the mapping directory; names the flow in the store,
    /// logs and metrics.
    pub name: String,
    /// Where `name:` is written; the start of the file when the name comes
    /// from the file name.
    pub name_position: Position,
    pub file: PathBuf,
    /// The Salesforce object (always `Account` today).
    pub object: String,
    /// SOQL condition choosing the records that need KYC, kept as written.
    pub select: String,
    pub select_position: Position,
    pub portal_type: PortalType,
    pub(crate) redirect_url: Option<Source>,
    pub(crate) custom_fields: Vec<(String, Source)>,
    pub(crate) portal_extra: Vec<(String, Source)>,
    pub(crate) writeback: BTreeMap<Moment, Vec<FieldRule>>,
    /// What is probably wrong but does not stop the file from loading
    /// (`check` prints these, the daemon logs them at start and reload).
    pub warnings: Diagnostics,
}

/// When fields are written back (the keys under `writeback:`); serialized
/// as those keys, so stored work and journals read like the mapping file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Moment {
    #[serde(rename = "on_portal_created")]
    PortalCreated,
    #[serde(rename = "on_application")]
    Application,
    #[serde(rename = "on_collect_opened")]
    CollectOpened,
}

impl Moment {
    pub const ALL: [Moment; 3] = [
        Moment::PortalCreated,
        Moment::Application,
        Moment::CollectOpened,
    ];

    /// The YAML key of this moment.
    pub fn key(self) -> &'static str {
        match self {
            Moment::PortalCreated => "on_portal_created",
            Moment::Application => "on_application",
            Moment::CollectOpened => "on_collect_opened",
        }
    }

    /// Context names (besides Account fields and `now`) that make sense at
    /// this moment; a template reading another one is a mistake.
    pub(crate) fn scope(self) -> &'static [&'static str] {
        match self {
            Moment::PortalCreated => &["portal"],
            Moment::Application => &["portal", "application"],
            Moment::CollectOpened => &["portal", "application", "collect"],
        }
    }
}

impl std::fmt::Display for Moment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.key())
    }
}

/// What write-back templates can read.
#[derive(Debug, Clone, Copy)]
pub struct WritebackContext<'a> {
    pub account: &'a Record,
    /// The portal answer (`id`, `link`, `url`), when known.
    pub portal: Option<&'a Value>,
    /// The Ondorse application as fetched, when known.
    pub application: Option<&'a Value>,
    /// The collect event data (`url`, `link`), for `on_collect_opened`.
    pub collect: Option<&'a Value>,
    pub now: DateTime<Utc>,
}

/// A value as written in the file: fixed, or a template.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Literal { value: Value, position: Position },
    Template(Template),
}

impl Source {
    fn position(&self) -> Position {
        match self {
            Source::Literal { position, .. } => *position,
            Source::Template(template) => template.position(),
        }
    }

    fn evaluate(&self, context: &Value) -> Result<Value, String> {
        match self {
            Source::Literal { value, .. } => Ok(value.clone()),
            Source::Template(template) => template.evaluate(context).map_err(|error| error.message),
        }
    }
}

/// One Salesforce field and how its value is made.
#[derive(Debug, Clone)]
pub(crate) struct FieldRule {
    pub field: String,
    pub position: Position,
    pub value: Source,
    pub map: Option<Vec<(String, Value, Position)>>,
    /// `None`: no `default` key (an unmatched value is written as it is).
    pub default: Option<(Value, Position)>,
}

impl FieldRule {
    fn apply(&self, context: &Value) -> Result<Value, String> {
        let value = self.value.evaluate(context)?;
        let fallback = |value: Value| match &self.default {
            Some((default, _)) => default.clone(),
            None => value,
        };
        let Some(map) = &self.map else {
            return Ok(if value.is_null() {
                fallback(value)
            } else {
                value
            });
        };
        let Some(key) = map_key(&value) else {
            return Ok(fallback(value));
        };
        Ok(
            match map.iter().find(|(candidate, _, _)| *candidate == key) {
                Some((_, output, _)) => output.clone(),
                None => fallback(value),
            },
        )
    }
}

/// The text a `map` key is compared with: `"0"` for the integer 0, `"1.5"`,
/// `"true"`, the text itself; null (and lists or objects) match no key.
pub(crate) fn map_key(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether `record` holds `path` (`Name`, `Owner.Email`), null included:
/// a null lookup (`Owner: null`) holds every path below it.
fn holds_path(record: &Record, path: &str) -> bool {
    let mut segments = path.split('.');
    let Some(first) = segments.next() else {
        return true;
    };
    let mut value = match record.get(first) {
        Some(value) => value,
        None => return false,
    };
    for segment in segments {
        value = match value {
            Value::Object(members) => match members.get(segment) {
                Some(member) => member,
                None => return false,
            },
            _ => return true,
        };
    }
    true
}

/// `value` with every null member of every object removed.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .filter(|(_, member)| !member.is_null())
                .map(|(name, member)| (name, without_nulls(member)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// A Salesforce field a mapping writes, for online checks.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenField {
    pub field: String,
    pub moment: Moment,
    /// Where the field name is written.
    pub position: Position,
    /// Every fixed value the field can receive: a literal, the `map`
    /// outputs, the `default`, each where it is written.
    pub fixed_values: Vec<(Value, Position)>,
    /// Whether the field can also receive a template's own output (a
    /// template without `map`, or a `map` without `default`), which only the
    /// data decides.
    pub may_write_rendered: bool,
}

/// A template failed on real data.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{}: cannot render `{key}` of mapping `{mapping}`: {message}", file.display(), position)]
pub struct RenderError {
    pub mapping: String,
    pub file: PathBuf,
    pub position: Position,
    /// The portal key or Salesforce field being rendered.
    pub key: String,
    pub message: String,
}

impl Mapping {
    /// The Account fields to query: every field the templates read
    /// (relationship paths such as `Owner.Email` included) plus `Id` and
    /// `SystemModstamp`; deduplicated case-insensitively (first spelling
    /// wins) and sorted.
    pub fn query_fields(&self) -> Vec<String> {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let read = self
            .read_fields_with_positions()
            .into_iter()
            .map(|(field, _)| field);
        for field in ALWAYS_QUERIED
            .iter()
            .map(|field| (*field).to_owned())
            .chain(read)
        {
            fields.entry(field.to_ascii_lowercase()).or_insert(field);
        }
        let mut fields: Vec<String> = fields.into_values().collect();
        fields.sort();
        fields
    }

    /// Every Account field a template reads, at each place it is read.
    pub fn read_fields_with_positions(&self) -> Vec<(String, Position)> {
        self.templates()
            .flat_map(|template| template.variables().iter().cloned())
            .filter(|(name, _)| {
                let root = name.split('.').next().unwrap_or_default();
                !CONTEXT_ROOTS.contains(&root)
            })
            .collect()
    }

    /// Every Salesforce field written, per moment, in file order.
    pub fn written_fields(&self) -> Vec<WrittenField> {
        let mut written = Vec::new();
        for (moment, rules) in &self.writeback {
            for rule in rules {
                let mut fixed_values = Vec::new();
                let is_template = matches!(rule.value, Source::Template(_));
                if let Source::Literal { value, position } = &rule.value {
                    fixed_values.push((value.clone(), *position));
                }
                if let Some(map) = &rule.map {
                    fixed_values.extend(
                        map.iter()
                            .map(|(_, output, position)| (output.clone(), *position)),
                    );
                }
                if let Some((default, position)) = &rule.default {
                    fixed_values.push((default.clone(), *position));
                }
                let may_write_rendered =
                    is_template && (rule.map.is_none() || rule.default.is_none());
                written.push(WrittenField {
                    field: rule.field.clone(),
                    moment: *moment,
                    position: rule.position,
                    fixed_values,
                    may_write_rendered,
                });
            }
        }
        written
    }

    /// The body of `POST /api/portals` for `account`: `type`,
    /// `redirect_url`, `default_custom_fields`, then any other keys.
    pub fn portal_body(&self, account: &Record) -> Result<Map<String, Value>, RenderError> {
        let context = self.context(account, [], Utc::now());
        // The portal is still created (the Account needs it); the warning
        // says which value went empty.
        let sources = self
            .redirect_url
            .iter()
            .map(|source| ("redirect_url", source))
            .chain(
                self.custom_fields
                    .iter()
                    .map(|(key, source)| (key.as_str(), source)),
            )
            .chain(
                self.portal_extra
                    .iter()
                    .map(|(key, source)| (key.as_str(), source)),
            );
        for (key, source) in sources {
            self.reads_missing_values(account, &[], key, source, false);
        }
        let mut body = Map::new();
        body.insert(
            "type".to_owned(),
            Value::String(self.portal_type.as_str().to_owned()),
        );
        if let Some(redirect_url) = &self.redirect_url {
            body.insert(
                "redirect_url".to_owned(),
                self.render("redirect_url", redirect_url, &context)?,
            );
        }
        let mut custom_fields = Map::new();
        for (key, source) in &self.custom_fields {
            custom_fields.insert(key.clone(), self.render(key, source, &context)?);
        }
        body.insert(
            "default_custom_fields".to_owned(),
            Value::Object(custom_fields),
        );
        for (key, source) in &self.portal_extra {
            body.insert(key.clone(), self.render(key, source, &context)?);
        }
        Ok(body)
    }

    /// The Salesforce fields to write at `moment`, with their values before
    /// type conversion (see [`super::convert_value`]). Empty when the
    /// mapping writes nothing then.
    pub fn writeback(
        &self,
        moment: Moment,
        context: &WritebackContext,
    ) -> Result<Map<String, Value>, RenderError> {
        let extra = [
            ("portal", context.portal),
            ("application", context.application),
            ("collect", context.collect),
        ];
        let template_context = self.context(context.account, extra, context.now);
        let mut fields = Map::new();
        for rule in self.writeback.get(&moment).into_iter().flatten() {
            if self.reads_missing_values(
                context.account,
                &extra,
                &rule.field,
                &rule.value,
                rule.default.is_some(),
            ) {
                continue;
            }
            let value = rule
                .apply(&template_context)
                .map_err(|message| RenderError {
                    mapping: self.name.clone(),
                    file: self.file.clone(),
                    position: rule.value.position(),
                    key: rule.field.clone(),
                    message,
                })?;
            fields.insert(rule.field.clone(), value);
        }
        Ok(fields)
    }

    /// Whether the mapping writes anything at `moment`.
    pub fn writes_at(&self, moment: Moment) -> bool {
        self.writeback
            .get(&moment)
            .is_some_and(|rules| !rules.is_empty())
    }

    /// The `default_custom_fields` key that carries the Account Id (its
    /// template is exactly `{{ Id }}`): how an Ondorse application is traced
    /// back to its Account when our own link table does not know it yet.
    pub fn account_id_custom_field(&self) -> Option<&str> {
        self.custom_fields
            .iter()
            .find_map(|(key, source)| match source {
                Source::Template(template) if template.expression() == Some("Id") => {
                    Some(key.as_str())
                }
                _ => None,
            })
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        let portal = self
            .redirect_url
            .iter()
            .chain(self.custom_fields.iter().map(|(_, source)| source))
            .chain(self.portal_extra.iter().map(|(_, source)| source));
        let writeback = self.writeback.values().flatten().map(|rule| &rule.value);
        portal.chain(writeback).filter_map(|source| match source {
            Source::Template(template) => Some(template),
            Source::Literal { .. } => None,
        })
    }

    /// The template context: Account fields at the top level, then the
    /// named values (which win over an Account field of the same name).
    /// Nulls are left out: to a template, a field Salesforce returns empty
    /// and a field it does not return are the same, so `default('unknown')`
    /// applies to both.
    fn context<const N: usize>(
        &self,
        account: &Record,
        named: [(&str, Option<&Value>); N],
        now: DateTime<Utc>,
    ) -> Value {
        let mut context = account.clone();
        for (name, value) in named {
            match value {
                Some(value) => context.insert(name.to_owned(), value.clone()),
                None => context.remove(name),
            };
        }
        context.insert(
            "now".to_owned(),
            Value::String(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        without_nulls(Value::Object(context))
    }

    /// Whether `source` reads a value that is missing at run time: an
    /// Account field that Salesforce's answer does not hold at all (not even
    /// as null), as a name the org spells otherwise (templates are
    /// case-sensitive, Salesforce is not) or a field the query did not
    /// return; a `named` value this moment does not have (a `collect`
    /// whose application has no collect link); or, unless the rule says what
    /// to write then (`has_default`), a value Ondorse's answer does not hold
    /// at all (a portal answered without `url` or `link`; an explicit null,
    /// such as an application's `risk_score` before it is scored, is a value
    /// and is written). Each is logged, so the value is never a silent null;
    /// a write-back of such a value is skipped, so it cannot clear the field.
    fn reads_missing_values(
        &self,
        account: &Record,
        named: &[(&str, Option<&Value>)],
        key: &str,
        source: &Source,
        has_default: bool,
    ) -> bool {
        let Source::Template(template) = source else {
            return false;
        };
        let mut moment_lacks = Vec::new();
        let mut answer_lacks = Vec::new();
        let mut account_lacks = Vec::new();
        for (path, position) in template.variables() {
            let (root, inner) = path.split_once('.').unwrap_or((path, ""));
            if !CONTEXT_ROOTS.contains(&root) {
                if !holds_path(account, path) {
                    account_lacks.push((path.as_str(), *position));
                }
                continue;
            }
            match named.iter().find(|(name, _)| *name == root) {
                Some((_, None)) => moment_lacks.push((path.as_str(), *position)),
                Some((_, Some(Value::Object(answer))))
                    if !has_default && !inner.is_empty() && !holds_path(answer, inner) =>
                {
                    answer_lacks.push((path.as_str(), *position));
                }
                _ => {}
            }
        }
        let position = |missing: &[(&str, Position)]| {
            let (_, position) = missing.first()?;
            let names: Vec<&str> = missing.iter().map(|(path, _)| *path).collect();
            Some((
                names.join(", "),
                format!("{}:{position}", self.file.display()),
            ))
        };
        let account_id = account.get("Id").and_then(Value::as_str).unwrap_or("?");
        let mapping = &self.name;
        if let Some((missing, position)) = position(&account_lacks) {
            tracing::warn!(account_id, %mapping, key, %missing, %position, "salesforce's answer has no such field (templates are case-sensitive: check the spelling against the org with `check --online`); a field written from it is left as it is");
        } else if let Some((missing, position)) = position(&moment_lacks) {
            tracing::warn!(account_id, %mapping, key, %missing, %position, "this moment has no such value (ondorse did not give it, e.g. a collect without a link); a field written from it is left as it is");
        } else if let Some((missing, position)) = position(&answer_lacks) {
            tracing::warn!(account_id, %mapping, key, %missing, %position, "ondorse's answer does not hold this value and the rule has no `default`; the field is left as it is");
        } else {
            return false;
        }
        true
    }

    fn render(&self, key: &str, source: &Source, context: &Value) -> Result<Value, RenderError> {
        source.evaluate(context).map_err(|message| RenderError {
            mapping: self.name.clone(),
            file: self.file.clone(),
            position: source.position(),
            key: key.to_owned(),
            message,
        })
    }
}
