//! The mapping file format, as serde types. These same types are what the
//! parser deserializes and what [`json_schema()`] describes, so the editor's
//! schema and `check` cannot disagree. Doc comments become the schema's
//! descriptions: they are written for CRM admins.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::text::Position;

/// The only format version this build reads.
pub const SUPPORTED_VERSION: u32 = 1;

/// The only Salesforce object the bridge syncs.
pub const SUPPORTED_OBJECT: &str = "Account";

/// A mapping file: which Salesforce Accounts need KYC, how their Ondorse
/// portal is created, and which Account fields are written back.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ondorse-bridge mapping file")]
pub struct MappingFile {
    /// Format version of this file. Only `1` exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: Located<u32>,
    /// Unique name of this flow (letters, digits, `_`, `-`). Defaults to the
    /// file name without its extension.
    #[serde(default)]
    pub name: Option<Located<String>>,
    /// The Salesforce object to read. Only `Account` is supported.
    #[schemars(extend("enum" = [SUPPORTED_OBJECT]))]
    pub object: Located<String>,
    /// SOQL condition (the part after `WHERE`) choosing the Accounts that
    /// need KYC, e.g. `Type = 'Customer' AND KYC_Status__c = null`.
    pub select: Located<String>,
    /// The body of the Ondorse portal created for each selected Account.
    pub portal: PortalSpec,
    /// Account fields written back, per moment.
    #[serde(default)]
    pub writeback: Option<WritebackSpec>,
}

/// The body of `POST /api/portals`. Keys other than those below are passed
/// to Ondorse as they are (templates allowed), unless they look like a typo
/// of a key below.
#[derive(Debug, JsonSchema)]
pub struct PortalSpec {
    /// Whether the portal onboards a company or a natural person.
    #[serde(rename = "type")]
    pub kind: Located<PortalType>,
    /// Where the client lands after submitting. A template, e.g.
    /// `https://app.example.com/kyc/done?account={{ Id }}`.
    #[serde(default)]
    pub redirect_url: Option<Located<Scalar>>,
    /// Custom case data stored on the Ondorse application. Keep the Account
    /// Id here: it is how a decision finds its way back. Values are templates.
    #[serde(default)]
    pub default_custom_fields: OrderedMap<Located<Scalar>>,
    /// Any other key is passed through to Ondorse; values are templates.
    #[serde(flatten)]
    pub extra: OrderedMap<Located<Scalar>>,
}

/// Who the portal onboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortalType {
    /// A company (KYB).
    Business,
    /// A natural person (KYC).
    Person,
}

impl PortalType {
    pub fn as_str(self) -> &'static str {
        match self {
            PortalType::Business => "business",
            PortalType::Person => "person",
        }
    }
}

/// Account fields written back at each moment. Each key is a Salesforce
/// field API name; each value is a template, a fixed value, or a block with
/// `value`, `map` and `default`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WritebackSpec {
    /// Once the portal exists. In scope: the Account fields and `portal`
    /// (`id`, `link`, `url`, `created_at`), and `now`.
    #[serde(default)]
    pub on_portal_created: OrderedMap<Located<FieldValue>>,
    /// Every time the Ondorse application is (re)fetched. In scope: the
    /// Account fields, `portal`, `application` (`id`, `status_review`,
    /// `status_execution`, `risk_level` as an integer, `risk_score`,
    /// `custom_fields`, `business`, `person`, `portals`, `created_at`,
    /// `updated_at`, and every other field Ondorse returns), and `now`.
    #[serde(default)]
    pub on_application: OrderedMap<Located<FieldValue>>,
    /// When the client opens the document collection. In scope: the Account
    /// fields, `portal`, `application`, `collect` (`url`, `link`, `at`), and
    /// `now`.
    #[serde(default)]
    pub on_collect_opened: OrderedMap<Located<FieldValue>>,
}

/// What one Salesforce field receives.
#[derive(Debug)]
pub enum FieldValue {
    /// A template (`"{{ portal.url }}"`) or a fixed value (`Portal sent`,
    /// `42`, `true`, `null` to clear the field).
    Scalar(Scalar),
    /// A value translated through a table.
    Block(FieldBlock),
}

/// A value translated through a table, e.g. Ondorse's `risk_level` to the
/// org's picklist values.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldBlock {
    /// The value to translate: usually one expression, such as
    /// `"{{ application.risk_level }}"`.
    pub value: Located<Scalar>,
    /// Translation table. A key matches the value written as text (`"0"` for
    /// the number 0, `"true"`, `"approved"`); a null value matches no key.
    #[serde(default)]
    pub map: Option<OrderedMap<Located<Scalar>>>,
    /// Written when the value matches no `map` key (or, without `map`, when
    /// the value is null). `null` clears the field. Without `default`, an
    /// unmatched value is written as it is.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Scalar")]
    pub default: Option<Located<Scalar>>,
}

/// A key written without a value (`default:`) or as `null` is still present:
/// it means "clear the field", unlike a missing key.
fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Located<Scalar>>, D::Error> {
    Located::deserialize(deserializer).map(Some)
}

/// A YAML scalar: text (possibly a template), number, boolean or null.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub Value);

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub position: Position,
    /// Byte range of the YAML node in the file (quotes included), used to
    /// point inside templates.
    pub span: std::ops::Range<usize>,
}

/// A YAML mapping whose keys keep their order and their positions; the
/// parser has already refused duplicate keys.
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(pub Vec<(Located<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = &(Located<String>, V)> {
        self.0.iter()
    }
}

/// The JSON Schema of the mapping format (draft 2020-12), for editors
/// (`# yaml-language-server: $schema=...`) and `ondorse-bridge mappings schema`.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(MappingFile))
        .expect("a generated schema is always representable as JSON")
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let location = spanned.referenced;
        let span = location.span();
        // Byte offsets are known for text sources, which is all we parse.
        let start = span.byte_offset().unwrap_or_default() as usize;
        let length = span.byte_len().unwrap_or_default() as usize;
        Ok(Located {
            value: spanned.value,
            position: Position {
                line: location.line() as usize,
                column: location.column() as usize,
            },
            span: start..start + length,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedMapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedMapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a mapping of names to values")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Located<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(OrderedMap(entries))
            }
        }

        // `any`, not `map`: a key with nothing under it (every entry
        // commented out) is an empty map, not an error.
        deserializer.deserialize_any(OrderedMapVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<V>(),
        })
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor).map(Scalar)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A template (`{{ Name | upper }}`), or a fixed text, number, boolean or null.",
            "type": ["string", "number", "boolean", "null"],
        })
    }
}

/// Reads one scalar; refuses lists and mappings.
struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a text, a number, true/false or null")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(value), &self))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldValueVisitor;

        impl<'de> Visitor<'de> for FieldValueVisitor {
            type Value = FieldValue;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str(
                    "a template, a fixed value, or a block with `value`, `map` and `default`",
                )
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<FieldValue, E> {
                ScalarVisitor.visit_bool(value).map(scalar)
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<FieldValue, E> {
                ScalarVisitor.visit_i64(value).map(scalar)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<FieldValue, E> {
                ScalarVisitor.visit_u64(value).map(scalar)
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<FieldValue, E> {
                ScalarVisitor.visit_f64(value).map(scalar)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<FieldValue, E> {
                ScalarVisitor.visit_str(value).map(scalar)
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<FieldValue, E> {
                ScalarVisitor.visit_string(value).map(scalar)
            }

            fn visit_unit<E: de::Error>(self) -> Result<FieldValue, E> {
                Ok(scalar(Value::Null))
            }

            fn visit_none<E: de::Error>(self) -> Result<FieldValue, E> {
                Ok(scalar(Value::Null))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
                FieldBlock::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FieldValue::Block)
            }
        }

        fn scalar(value: Value) -> FieldValue {
            FieldValue::Scalar(Scalar(value))
        }

        deserializer.deserialize_any(FieldValueVisitor)
    }
}

impl JsonSchema for FieldValue {
    fn schema_name() -> Cow<'static, str> {
        "FieldValue".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What the Salesforce field receives: a template, a fixed value (`null` clears the field), or a block with `value`, `map` and `default`.",
            "anyOf": [
                generator.subschema_for::<Scalar>(),
                generator.subschema_for::<FieldBlock>(),
            ],
        })
    }
}

impl<'de> Deserialize<'de> for PortalSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortalVisitor;

        impl<'de> Visitor<'de> for PortalVisitor {
            type Value = PortalSpec;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter
                    .write_str("a mapping with `type`, `redirect_url` and `default_custom_fields`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PortalSpec, A::Error> {
                let mut kind = None;
                let mut redirect_url = None;
                let mut default_custom_fields = None;
                let mut extra = Vec::new();
                while let Some(key) = map.next_key::<Located<String>>()? {
                    match key.value.as_str() {
                        "type" => kind = Some(map.next_value()?),
                        "redirect_url" => redirect_url = Some(map.next_value()?),
                        "default_custom_fields" => default_custom_fields = Some(map.next_value()?),
                        _ => extra.push((key, map.next_value()?)),
                    }
                }
                Ok(PortalSpec {
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    redirect_url,
                    default_custom_fields: default_custom_fields.unwrap_or_default(),
                    extra: OrderedMap(extra),
                })
            }
        }

        deserializer.deserialize_map(PortalVisitor)
    }
}
