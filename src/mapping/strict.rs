//! The strict key check: every key of a file against the JSON Schema
//! generated from the serde types, so the editor's schema, the parser and
//! `check` agree on the format by construction.
//!
//! It runs before typed deserialization because serde stops at the first
//! problem, while an admin wants every misspelt key of a file at once, each
//! with a "did you mean".

use std::fmt;
use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::model::{Located, SUPPORTED_VERSION, json_schema};
use crate::text::{Position, did_you_mean, suggestion};

/// The schema of the format, generated once.
static SCHEMA: LazyLock<Value> = LazyLock::new(json_schema);

/// The shape of a YAML document with the position of every key and value;
/// scalar values are kept as text, which is all the key check looks at.
#[derive(Debug)]
pub(crate) enum Node {
    Scalar(Option<String>),
    Sequence,
    Mapping(Vec<(Located<String>, Located<Node>)>),
}

/// Every unknown key, missing required key and value outside a closed list
/// in `document`, in file order.
pub(crate) fn check(document: &Located<Node>) -> Vec<(Position, String)> {
    let mut problems = Vec::new();
    walk(&SCHEMA, document, None, &mut problems);
    problems.sort_by_key(|(position, _)| *position);
    problems
}

fn walk(
    schema: &Value,
    node: &Located<Node>,
    key: Option<&str>,
    problems: &mut Vec<(Position, String)>,
) {
    let schema = resolve(schema);
    let what = key.map_or_else(|| "a mapping file".to_owned(), |key| format!("`{key}`"));
    // The format has no lists anywhere.
    if let Node::Sequence = node.value {
        let holds_keys = is_object(schema)
            || alternatives(schema)
                .is_some_and(|branches| branches.iter().any(|branch| is_object(resolve(branch))));
        let instead = if holds_keys {
            "; write its entries as `key: value` lines, without `- ` or `[ ]`"
        } else {
            "; write one value"
        };
        problems.push((node.position, format!("{what} cannot be a list{instead}")));
        return;
    }
    if is_object(schema) && matches!(node.value, Node::Scalar(Some(_))) {
        problems.push((
            node.position,
            format!("{what} must hold `key: value` lines, not a single value"),
        ));
        return;
    }
    if let Some(branches) = alternatives(schema) {
        // A value that may be a scalar or a block: check the block branch
        // against a mapping; scalars are typed by serde later.
        if let Node::Mapping(_) = node.value
            && let Some(object) = branches
                .iter()
                .map(resolve)
                .find(|branch| is_object(branch))
        {
            walk(object, node, key, problems);
        }
        if let (Node::Scalar(Some(text)), Some(allowed)) = (&node.value, constants(branches)) {
            closed_list(key, text, &allowed, node.position, problems);
        }
        return;
    }
    match &node.value {
        Node::Mapping(entries) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let names = || {
                properties
                    .into_iter()
                    .flat_map(|properties| properties.keys().map(String::as_str))
            };
            let additional = schema.get("additionalProperties");
            // Keys a typo was taken for: not reported missing a second time.
            let mut suggested = Vec::new();
            for (entry_key, value) in entries {
                let name = entry_key.value.as_str();
                if let Some(property) = properties.and_then(|properties| properties.get(name)) {
                    walk(property, value, Some(name), problems);
                    continue;
                }
                match additional {
                    Some(Value::Bool(false)) => {
                        let message = match suggestion(name, names()) {
                            Some(near) => {
                                suggested.push(near);
                                format!("unknown key `{name}`; did you mean `{near}`?")
                            }
                            None => {
                                let expected: Vec<&str> = names().collect();
                                format!("unknown key `{name}`, expected {}", one_of(&expected))
                            }
                        };
                        problems.push((entry_key.position, message));
                    }
                    // Free keys next to declared ones (under `portal:`): a key
                    // that looks like a declared one is a typo, not an extra.
                    Some(extra) => {
                        if let Some(near) = suggestion(name, names()) {
                            suggested.push(near);
                            problems.push((
                                entry_key.position,
                                format!("unknown key `{name}`; did you mean `{near}`?"),
                            ));
                        }
                        walk(extra, value, Some(name), problems);
                    }
                    None => {}
                }
            }
            let required = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for name in required.filter_map(Value::as_str) {
                let present = entries.iter().any(|(entry_key, _)| entry_key.value == name);
                if !present && !suggested.contains(&name) {
                    let message = match key {
                        Some(key) => format!("missing key `{name}` under `{key}`"),
                        None if name == "version" => format!(
                            "missing key `version`; add `version: {SUPPORTED_VERSION}` at the top of the file"
                        ),
                        None => format!("missing key `{name}`"),
                    };
                    problems.push((node.position, message));
                }
            }
        }
        Node::Scalar(Some(text)) => {
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                let allowed: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                closed_list(key, text, &allowed, node.position, problems);
            }
        }
        Node::Scalar(None) | Node::Sequence => {}
    }
}

fn closed_list(
    key: Option<&str>,
    text: &str,
    allowed: &[&str],
    position: Position,
    problems: &mut Vec<(Position, String)>,
) {
    if allowed.is_empty() || allowed.contains(&text) {
        return;
    }
    let place = key.map(|key| format!(" for `{key}`")).unwrap_or_default();
    let mut message = format!(
        "unknown value `{text}`{place}, expected {}",
        one_of(allowed)
    );
    message.push_str(&did_you_mean(text, allowed.iter().copied()));
    problems.push((position, message));
}

/// `` `a`, `b` or `c` ``
pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.as_slice() {
        [single] => single.clone(),
        [rest @ .., last] => format!("one of {} or {last}", rest.join(", ")),
        [] => "nothing here".to_owned(),
    }
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/$defs/");
            resolve(&SCHEMA["$defs"][name])
        }
        None => schema,
    }
}

fn alternatives(schema: &Value) -> Option<&Vec<Value>> {
    schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
}

fn is_object(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
}

/// The values of a `oneOf` of constants (how an enum is described).
fn constants(branches: &[Value]) -> Option<Vec<&str>> {
    branches
        .iter()
        .map(|branch| resolve(branch).get("const").and_then(Value::as_str))
        .collect()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Some(text.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Node, A::Error> {
        while sequence.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Node::Sequence)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Located<String>>()? {
            entries.push((key, map.next_value::<Located<Node>>()?));
        }
        Ok(Node::Mapping(entries))
    }
}
