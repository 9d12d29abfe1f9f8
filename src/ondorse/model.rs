//! What Ondorse answers, read tolerantly.
//!
//! The contract marks most shapes as assumed, so these types keep every
//! field they do not know in `extra` (mapping templates see them as
//! `application.*`), accept `risk_level` as an integer or a name, and never
//! fail a whole application because one field has an unexpected type: such
//! a field reads as unset, its raw value is kept in `extra` under
//! `<field>_raw` (see [`RAW_SUFFIX`]) and a warning is logged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Suffix of the `extra` key that keeps a known field's raw value when it
/// had an unexpected type, e.g. `risk_level_raw`.
pub const RAW_SUFFIX: &str = "_raw";

/// `POST /api/portals` answer: an onboarding portal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Portal {
    pub id: String,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    /// Every other key of the answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Portal {
    /// The URL to send to the client: `url` when Ondorse gave one, else
    /// `{portal_base_url}/portals/{link}`; `None` when neither is known.
    pub fn resolved_url(&self, portal_base_url: &str) -> Option<String> {
        if let Some(url) = self.url.as_deref().filter(|url| !url.is_empty()) {
            return Some(url.to_owned());
        }
        let link = self.link.as_deref().filter(|link| !link.is_empty())?;
        Some(format!(
            "{}/portals/{link}",
            portal_base_url.trim_end_matches('/')
        ))
    }
}

/// Ondorse's risk scale. The wire carries an integer (-1 unset, 0 low,
/// 1 medium, 2 high, 3 forbidden) or, tolerated, the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RiskLevel {
    Unset,
    Low,
    Medium,
    High,
    Forbidden,
}

impl RiskLevel {
    /// The wire integer.
    pub fn as_i64(self) -> i64 {
        match self {
            RiskLevel::Unset => -1,
            RiskLevel::Low => 0,
            RiskLevel::Medium => 1,
            RiskLevel::High => 2,
            RiskLevel::Forbidden => 3,
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            RiskLevel::Unset => "unset",
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Forbidden => "forbidden",
        }
    }

    pub fn from_i64(level: i64) -> Option<RiskLevel> {
        Some(match level {
            -1 => RiskLevel::Unset,
            0 => RiskLevel::Low,
            1 => RiskLevel::Medium,
            2 => RiskLevel::High,
            3 => RiskLevel::Forbidden,
            _ => return None,
        })
    }

    /// Reads an integer, an integral float, a name (any case) or a numeric
    /// string; `None` for anything else.
    pub fn from_value(value: &Value) -> Option<RiskLevel> {
        match value {
            Value::Number(number) => match number.as_i64() {
                Some(level) => RiskLevel::from_i64(level),
                None => number
                    .as_f64()
                    .filter(|level| level.fract() == 0.0)
                    .and_then(|level| RiskLevel::from_i64(level as i64)),
            },
            Value::String(text) => {
                let text = text.trim();
                if let Ok(level) = text.parse::<i64>() {
                    return RiskLevel::from_i64(level);
                }
                [
                    RiskLevel::Unset,
                    RiskLevel::Low,
                    RiskLevel::Medium,
                    RiskLevel::High,
                    RiskLevel::Forbidden,
                ]
                .into_iter()
                .find(|level| level.name().eq_ignore_ascii_case(text))
            }
            _ => None,
        }
    }
}

impl Serialize for RiskLevel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.as_i64())
    }
}

impl<'de> Deserialize<'de> for RiskLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        RiskLevel::from_value(&value)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown risk level {value}")))
    }
}

/// Where an application stands, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
    /// No final decision yet: `status_review` is null or another value.
    Pending(Option<String>),
}

/// `GET /api/applications/{id}` answer (also `data.object` of webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawApplication")]
pub struct Application {
    pub id: String,
    pub status_review: Option<String>,
    pub status_execution: Option<String>,
    /// `None` when absent, null or unreadable (see the module docs).
    pub risk_level: Option<RiskLevel>,
    pub risk_score: Option<f64>,
    pub custom_fields: Map<String, Value>,
    pub updated_at: Option<String>,
    /// Every other key, plus `<field>_raw` for known fields that had an
    /// unexpected type.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The wire form: known keys taken as raw JSON, so a wrong type in one of
/// them is handled field by field instead of failing the whole answer.
#[derive(Deserialize)]
struct RawApplication {
    id: String,
    #[serde(default)]
    status_review: Value,
    #[serde(default)]
    status_execution: Value,
    #[serde(default)]
    risk_level: Value,
    #[serde(default)]
    risk_score: Value,
    #[serde(default)]
    custom_fields: Value,
    #[serde(default)]
    updated_at: Value,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl From<RawApplication> for Application {
    fn from(raw: RawApplication) -> Application {
        let mut extra = raw.extra;
        let id = raw.id;
        let mut unreadable = |field: &str, value: Value| {
            tracing::warn!(
                application_id = %id,
                field,
                value = %value,
                "ondorse application field has an unexpected type; treated as unset"
            );
            extra.insert(format!("{field}{RAW_SUFFIX}"), value);
        };

        let mut text = |field: &str, value: Value| match value {
            Value::Null => None,
            Value::String(text) => Some(text),
            other => {
                unreadable(field, other);
                None
            }
        };
        let status_review = text("status_review", raw.status_review);
        let status_execution = text("status_execution", raw.status_execution);
        let updated_at = text("updated_at", raw.updated_at);

        let risk_level = match raw.risk_level {
            Value::Null => None,
            value => match RiskLevel::from_value(&value) {
                Some(level) => Some(level),
                None => {
                    unreadable("risk_level", value);
                    None
                }
            },
        };
        let risk_score = match raw.risk_score {
            Value::Null => None,
            Value::Number(number) => number.as_f64(),
            Value::String(text) if text.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                text.trim().parse().ok()
            }
            other => {
                unreadable("risk_score", other);
                None
            }
        };
        let custom_fields = match raw.custom_fields {
            Value::Null => Map::new(),
            Value::Object(fields) => fields,
            other => {
                unreadable("custom_fields", other);
                Map::new()
            }
        };

        Application {
            id,
            status_review,
            status_execution,
            risk_level,
            risk_score,
            custom_fields,
            updated_at,
            extra,
        }
    }
}

impl Application {
    /// `approved` and `rejected` (any case) are final; anything else,
    /// null included, is not.
    pub fn decision(&self) -> Decision {
        match self.status_review.as_deref() {
            Some(review) if review.eq_ignore_ascii_case("approved") => Decision::Approved,
            Some(review) if review.eq_ignore_ascii_case("rejected") => Decision::Rejected,
            other => Decision::Pending(other.map(str::to_owned)),
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self.decision(), Decision::Pending(_))
    }

    /// What mapping templates see as `application.*`: every field, unknown
    /// ones included; `risk_level` as an integer (-1 when unset or
    /// unreadable); `risk_score` a number or null.
    pub fn template_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("id".to_owned(), Value::from(self.id.clone()));
        object.insert(
            "status_review".to_owned(),
            self.status_review.clone().map_or(Value::Null, Value::from),
        );
        object.insert(
            "status_execution".to_owned(),
            self.status_execution
                .clone()
                .map_or(Value::Null, Value::from),
        );
        object.insert(
            "risk_level".to_owned(),
            Value::from(self.risk_level.unwrap_or(RiskLevel::Unset).as_i64()),
        );
        object.insert(
            "risk_score".to_owned(),
            self.risk_score
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
        );
        object.insert(
            "custom_fields".to_owned(),
            Value::Object(self.custom_fields.clone()),
        );
        object.insert(
            "updated_at".to_owned(),
            self.updated_at.clone().map_or(Value::Null, Value::from),
        );
        for (key, value) in &self.extra {
            object.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn application(value: Value) -> Application {
        serde_json::from_value(value).expect("application decodes")
    }

    #[test]
    fn risk_levels_read_as_integers_or_names() {
        for (input, expected) in [
            (json!(1), Some(RiskLevel::Medium)),
            (json!(-1), Some(RiskLevel::Unset)),
            (json!(3.0), Some(RiskLevel::Forbidden)),
            (json!("HIGH"), Some(RiskLevel::High)),
            (json!("low"), Some(RiskLevel::Low)),
            (json!("2"), Some(RiskLevel::High)),
            (json!("Unset"), Some(RiskLevel::Unset)),
            (json!(7), None),
            (json!(1.5), None),
            (json!("severe"), None),
            (json!({"x": 1}), None),
        ] {
            assert_eq!(RiskLevel::from_value(&input), expected, "input {input}");
        }
    }

    #[test]
    fn wrong_types_do_not_fail_the_application() {
        let app = application(json!({
            "id": "app_1", "status_review": 5, "risk_level": {"x": 1},
            "risk_score": "n/a", "custom_fields": [1], "surprise": true
        }));
        assert_eq!(app.status_review, None);
        assert_eq!(app.risk_level, None);
        assert_eq!(app.risk_score, None);
        assert!(app.custom_fields.is_empty());
        assert_eq!(app.extra["risk_level_raw"], json!({"x": 1}));
        assert_eq!(app.extra["status_review_raw"], json!(5));
        assert_eq!(app.extra["surprise"], json!(true));
        let template = app.template_value();
        assert_eq!(template["risk_level"], json!(-1));
        assert_eq!(template["risk_score"], Value::Null);
    }

    #[test]
    fn decisions() {
        let decided =
            |review: Value| application(json!({"id": "a", "status_review": review})).decision();
        assert_eq!(decided(json!("approved")), Decision::Approved);
        assert_eq!(decided(json!("Rejected")), Decision::Rejected);
        assert_eq!(decided(Value::Null), Decision::Pending(None));
        assert_eq!(
            decided(json!("escalated")),
            Decision::Pending(Some("escalated".to_owned()))
        );
        assert!(!application(json!({"id": "a"})).is_final());
    }

    #[test]
    fn template_value_keeps_everything() {
        let app = application(json!({
            "id": "app_2", "status_review": "approved", "status_execution": "done",
            "risk_level": "medium", "risk_score": 42.5,
            "custom_fields": {"salesforce_account_id": "001"},
            "business": {"organization_name": "Acme"}, "updated_at": "2026-11-26T09:12:03.104000Z"
        }));
        let template = app.template_value();
        assert_eq!(template["risk_level"], json!(1));
        assert_eq!(template["risk_score"], json!(42.5));
        assert_eq!(template["business"]["organization_name"], json!("Acme"));
        assert_eq!(
            template["custom_fields"]["salesforce_account_id"],
            json!("001")
        );
        // Serialising gives the wire form back, risk level as an integer.
        let round_trip: Application =
            serde_json::from_value(serde_json::to_value(&app).expect("serialises"))
                .expect("decodes");
        assert_eq!(round_trip, app);
    }

    #[test]
    fn portal_urls() {
        let portal: Portal =
            serde_json::from_value(json!({"id": "prt_1", "link": "abc", "type": "business"}))
                .expect("portal decodes");
        assert_eq!(
            portal.resolved_url("https://collect.ondorse.co/"),
            Some("https://collect.ondorse.co/portals/abc".to_owned())
        );
        assert_eq!(portal.extra["type"], json!("business"));
        let with_url = Portal {
            url: Some("https://x/portals/abc".to_owned()),
            ..portal.clone()
        };
        assert_eq!(
            with_url.resolved_url("https://ignored"),
            Some("https://x/portals/abc".to_owned())
        );
        let bare = Portal {
            link: None,
            ..portal
        };
        assert_eq!(bare.resolved_url("https://collect.ondorse.co"), None);
    }
}
