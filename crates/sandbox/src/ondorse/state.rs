//! What the sandbox holds: portals, applications, idempotency keys, events.
//!
//! Everything sits behind one mutex held for microseconds; records are kept
//! as JSON objects shaped like the wire, so what tests read is what the API
//! serves.

use std::collections::HashMap;

use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// Length of a portal `link` (`k3J9xQ2mPz`).
const LINK_LENGTH: usize = 10;
/// Random bytes in `prt_` / `app_` ids: 96 bits, 24 hex digits.
const ID_BYTES: usize = 12;
/// Crockford's base32 alphabet, as ULIDs use it.
const ULID_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Share of automatic reviews that leave the risk level unset (-1), so the
/// "no risk yet" path is exercised.
const UNSET_RISK_SHARE: f64 = 0.05;

/// `2026-11-25T20:49:32.024461Z`: microseconds and `Z`, as Ondorse writes them.
pub(super) fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// How `POST /api/portals` went.
pub(super) enum PortalOutcome {
    Created(Value),
    /// A known `Idempotency-Key` with the same body: the first answer.
    Replayed(Value),
    /// A known `Idempotency-Key` with another body.
    Conflict,
}

/// An automatic review's outcome.
pub(super) struct Verdict {
    pub(super) decision: &'static str,
    pub(super) risk_level: i64,
    pub(super) risk_score: Option<f64>,
}

pub(super) struct State {
    rng: StdRng,
    portals: Vec<Map<String, Value>>,
    portal_index: HashMap<String, usize>,
    applications: Vec<Map<String, Value>>,
    application_index: HashMap<String, usize>,
    /// Portal id → its application, so a portal is submitted once.
    portal_applications: HashMap<String, String>,
    /// `Idempotency-Key` → (request body, portal index).
    idempotency: HashMap<String, (Map<String, Value>, usize)>,
    events: Vec<Value>,
}

impl State {
    pub(super) fn new(seed: u64) -> State {
        State {
            rng: StdRng::seed_from_u64(seed),
            portals: Vec::new(),
            portal_index: HashMap::new(),
            applications: Vec::new(),
            application_index: HashMap::new(),
            portal_applications: HashMap::new(),
            idempotency: HashMap::new(),
            events: Vec::new(),
        }
    }

    fn hex_id(&mut self, prefix: &str) -> String {
        let bytes: [u8; ID_BYTES] = self.rng.random();
        format!("{prefix}{}", hex::encode(bytes))
    }

    fn link(&mut self) -> String {
        (&mut self.rng)
            .sample_iter(Alphanumeric)
            .take(LINK_LENGTH)
            .map(char::from)
            .collect()
    }

    /// `evt_` and a ULID: 48 bits of milliseconds, 80 random bits.
    pub(super) fn event_id(&mut self) -> String {
        let millis = chrono::Utc::now().timestamp_millis().max(0) as u128;
        let random: u128 = self.rng.random::<u128>() & ((1 << 80) - 1);
        let value = (millis << 80) | random;
        let ulid: String = (0..26)
            .rev()
            .map(|index| ULID_ALPHABET[((value >> (index * 5)) & 0x1f) as usize] as char)
            .collect();
        format!("evt_{ulid}")
    }

    pub(super) fn random_ratio(&mut self) -> f64 {
        self.rng.random()
    }

    pub(super) fn create_portal(
        &mut self,
        body: Map<String, Value>,
        idempotency_key: Option<String>,
        portal_base_url: &str,
    ) -> PortalOutcome {
        if let Some(key) = &idempotency_key
            && let Some((first_body, index)) = self.idempotency.get(key)
        {
            return if *first_body == body {
                PortalOutcome::Replayed(public_portal(&self.portals[*index]))
            } else {
                PortalOutcome::Conflict
            };
        }
        let id = self.hex_id("prt_");
        let link = self.link();
        let mut portal = Map::new();
        portal.insert("id".to_owned(), Value::from(id.clone()));
        portal.insert(
            "url".to_owned(),
            Value::from(format!(
                "{}/portals/{link}",
                portal_base_url.trim_end_matches('/')
            )),
        );
        portal.insert("link".to_owned(), Value::from(link));
        portal.insert("created_at".to_owned(), Value::from(timestamp()));
        for (key, value) in &body {
            portal.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let answer = public_portal(&portal);
        let index = self.portals.len();
        self.portals.push(portal);
        self.portal_index.insert(id, index);
        if let Some(key) = idempotency_key {
            self.idempotency.insert(key, (body, index));
        }
        PortalOutcome::Created(answer)
    }

    pub(super) fn portals(&self) -> Vec<Value> {
        self.portals.iter().cloned().map(Value::Object).collect()
    }

    pub(super) fn portal(&self, id: &str) -> Option<Value> {
        let index = *self.portal_index.get(id)?;
        Some(Value::Object(self.portals[index].clone()))
    }

    pub(super) fn applications(&self) -> Vec<Value> {
        self.applications
            .iter()
            .cloned()
            .map(Value::Object)
            .collect()
    }

    pub(super) fn application(&self, id: &str) -> Option<Value> {
        self.application_position(id)
            .map(|index| Value::Object(self.applications[index].clone()))
    }

    fn application_position(&self, id: &str) -> Option<usize> {
        self.application_index.get(id).copied()
    }

    /// The portal's client submits: creates its application (once).
    /// Returns the application id and whether it is new.
    pub(super) fn submit_portal(&mut self, portal_id: &str) -> Option<(String, bool)> {
        if let Some(existing) = self.portal_applications.get(portal_id) {
            return Some((existing.clone(), false));
        }
        let portal = &self.portals[*self.portal_index.get(portal_id)?];
        let custom_fields = match portal.get("default_custom_fields") {
            Some(Value::Object(fields)) => fields.clone(),
            _ => Map::new(),
        };
        let kind = match portal.get("type").and_then(Value::as_str) {
            Some("person") => "person",
            // Ondorse is KYB first: a portal without a type onboards a business.
            _ => "business",
        };
        let party = party(kind, &custom_fields);
        let id = self.hex_id("app_");
        let now = timestamp();
        let mut application = Map::new();
        application.insert("id".to_owned(), Value::from(id.clone()));
        application.insert("portal_id".to_owned(), Value::from(portal_id));
        application.insert("status_review".to_owned(), Value::Null);
        application.insert("status_execution".to_owned(), Value::from("in_progress"));
        application.insert("risk_level".to_owned(), Value::from(-1));
        application.insert("risk_score".to_owned(), Value::Null);
        application.insert("custom_fields".to_owned(), Value::Object(custom_fields));
        application.insert(kind.to_owned(), party);
        application.insert("created_at".to_owned(), Value::from(now.clone()));
        application.insert("updated_at".to_owned(), Value::from(now));
        self.application_index
            .insert(id.clone(), self.applications.len());
        self.applications.push(application);
        self.portal_applications
            .insert(portal_id.to_owned(), id.clone());
        Some((id, true))
    }

    /// Records a review; `false` for an unknown application.
    pub(super) fn review(
        &mut self,
        application_id: &str,
        decision: &str,
        risk_level: i64,
        risk_score: Option<f64>,
    ) -> bool {
        let Some(index) = self.application_position(application_id) else {
            return false;
        };
        let application = &mut self.applications[index];
        application.insert("status_review".to_owned(), Value::from(decision));
        application.insert("status_execution".to_owned(), Value::from("done"));
        application.insert("risk_level".to_owned(), Value::from(risk_level));
        application.insert(
            "risk_score".to_owned(),
            risk_score
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
        );
        application.insert("updated_at".to_owned(), Value::from(timestamp()));
        true
    }

    /// A seeded decision: `approve_ratio` of them approve; approved cases
    /// are low to high risk, rejected ones high or forbidden.
    pub(super) fn verdict(&mut self, approve_ratio: f64) -> Verdict {
        let approved = self.rng.random::<f64>() < approve_ratio;
        let risk_level = if approved {
            if self.rng.random::<f64>() < UNSET_RISK_SHARE {
                -1
            } else {
                self.rng.random_range(0..=2)
            }
        } else {
            self.rng.random_range(2..=3)
        };
        // Scores live in 0..100, a quarter of the range per level, one decimal.
        let risk_score = (risk_level >= 0).then(|| {
            let within: f64 = self.rng.random_range(0.0..25.0);
            ((risk_level as f64 * 25.0 + within) * 10.0).round() / 10.0
        });
        Verdict {
            decision: if approved { "approved" } else { "rejected" },
            risk_level,
            risk_score,
        }
    }

    /// Opens a collect portal on the application; returns its link.
    pub(super) fn open_collect(
        &mut self,
        application_id: &str,
        portal_base_url: &str,
    ) -> Option<String> {
        let index = self.application_position(application_id)?;
        let link = self.link();
        let application = &mut self.applications[index];
        application.insert(
            "portals".to_owned(),
            json!({
                "link": link,
                "url": format!("{}/portals/{link}", portal_base_url.trim_end_matches('/')),
            }),
        );
        application.insert("updated_at".to_owned(), Value::from(timestamp()));
        Some(link)
    }

    /// Closes the application's collect portal (the applicant sent the
    /// documents): `portals` leaves it; `false` for an unknown application
    /// or one with no open collect.
    pub(super) fn close_collect(&mut self, application_id: &str) -> bool {
        let Some(index) = self.application_position(application_id) else {
            return false;
        };
        let application = &mut self.applications[index];
        if application.remove("portals").is_none() {
            return false;
        }
        application.insert("updated_at".to_owned(), Value::from(timestamp()));
        true
    }

    /// Builds and records the envelope of an event about `application_id`
    /// (its snapshot now, or just the id when unknown).
    pub(super) fn event(&mut self, event_type: &str, application_id: &str) -> Value {
        let object = self
            .application(application_id)
            .unwrap_or_else(|| json!({ "id": application_id }));
        let envelope = json!({
            "event_id": self.event_id(),
            "type": event_type,
            "created_at": timestamp(),
            "data": { "object": object },
        });
        self.events.push(envelope.clone());
        envelope
    }

    pub(super) fn events(&self) -> Vec<Value> {
        self.events.clone()
    }
}

/// The portal fields `POST /api/portals` answers with.
fn public_portal(portal: &Map<String, Value>) -> Value {
    let mut answer = Map::new();
    for key in ["id", "link", "url", "created_at"] {
        if let Some(value) = portal.get(key) {
            answer.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(answer)
}

/// The `business` or `person` block, filled from the custom fields the
/// portal was created with (first matching key wins, else null).
fn party(kind: &str, custom_fields: &Map<String, Value>) -> Value {
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|key| custom_fields.get(*key).filter(|value| !value.is_null()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    if kind == "person" {
        json!({
            "first_name": pick(&["first_name", "firstname"]),
            "last_name": pick(&["last_name", "lastname"]),
            "email": pick(&["email"]),
            "birth_date": pick(&["birth_date", "birthdate"]),
            "nationality": pick(&["nationality", "country"]),
        })
    } else {
        json!({
            "organization_name": pick(&["organization_name", "company_name", "name"]),
            "country": pick(&["country"]),
            "local_number": pick(&["local_number", "registration_number"]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_look_like_ulids() {
        let mut state = State::new(1);
        let id = state.event_id();
        assert_eq!(id.len(), 4 + 26);
        assert!(id[4..].bytes().all(|byte| ULID_ALPHABET.contains(&byte)));
        assert_ne!(id, state.event_id());
    }

    #[test]
    fn verdicts_are_seeded_and_in_range() {
        let mut first = State::new(7);
        let mut second = State::new(7);
        for _ in 0..200 {
            let (one, two) = (first.verdict(0.5), second.verdict(0.5));
            assert_eq!(one.decision, two.decision);
            assert_eq!(one.risk_level, two.risk_level);
            assert_eq!(one.risk_score, two.risk_score);
            assert!((-1..=3).contains(&one.risk_level));
            assert_eq!(one.risk_score.is_none(), one.risk_level == -1);
            if one.decision == "rejected" {
                assert!(one.risk_level >= 2);
            }
        }
    }
}
