//! Seed data: the org's sales users and realistic generated companies,
//! deterministic per seed so tests and benchmarks can rely on them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::data::{self, Row, USER_PREFIX};
use super::org::INTEGRATION_USER_SERIAL;

/// The sales users who own Accounts: (name, email). Their Ids are fixed, so
/// generated Accounts can point at them before any sandbox exists.
const SALES_USERS: &[(&str, &str)] = &[
    ("Sam Carter", "sam.carter@example.com"),
    ("Amélie Dubois", "amelie.dubois@example.com"),
    ("Jonas Weber", "jonas.weber@example.com"),
    ("Priya Natarajan", "priya.natarajan@example.com"),
    ("Lucía Fernández", "lucia.fernandez@example.com"),
];

/// The Id of the `index`-th seeded sales user.
fn sales_user_id(index: usize) -> String {
    data::make_id(USER_PREFIX, INTEGRATION_USER_SERIAL + 1 + index as u64)
}

/// The seeded sales users, as stored rows.
pub(crate) fn seeded_users() -> Vec<Row> {
    SALES_USERS
        .iter()
        .enumerate()
        .map(|(index, (name, email))| {
            let mut user = Row::new();
            user.insert("Id".into(), json!(sales_user_id(index)));
            user.insert("Name".into(), json!(name));
            user.insert("Email".into(), json!(email));
            user.insert("Username".into(), json!(email));
            // The last one left the company: Accounts can still point to them.
            user.insert("IsActive".into(), json!(index + 1 < SALES_USERS.len()));
            user
        })
        .collect()
}

/// Ids of the seeded sales users (owners of generated Accounts).
pub fn sales_user_ids() -> Vec<String> {
    (0..SALES_USERS.len()).map(sales_user_id).collect()
}

const NAME_STEMS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Aperture",
    "Wonka",
    "Gringotts",
    "Oceanic",
    "Nakatomi",
    "Massive",
    "Dunder",
    "Sterling",
    "Pied Piper",
    "Blue Sun",
    "Monarch",
    "Ollivander",
    "Zorg",
];
const NAME_SECTORS: &[&str] = &[
    "Logistics",
    "Foods",
    "Capital",
    "Energy",
    "Robotics",
    "Health",
    "Textiles",
    "Software",
    "Mining",
    "Pharma",
    "Media",
    "Consulting",
    "Shipping",
    "Retail",
];
/// A country generated companies can be registered in.
struct Country {
    code: &'static str,
    name: &'static str,
    legal_form: &'static str,
    phone_prefix: &'static str,
    /// Digits of a company registration number there (SIREN has 9).
    registration_digits: usize,
    cities: &'static [&'static str],
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "FR",
        name: "France",
        legal_form: "SAS",
        phone_prefix: "+33 1",
        registration_digits: 9,
        cities: &["Paris", "Lyon", "Nantes", "Lille"],
    },
    Country {
        code: "DE",
        name: "Germany",
        legal_form: "GmbH",
        phone_prefix: "+49 30",
        registration_digits: 8,
        cities: &["Berlin", "Hamburg", "Munich"],
    },
    Country {
        code: "GB",
        name: "United Kingdom",
        legal_form: "Ltd",
        phone_prefix: "+44 20",
        registration_digits: 8,
        cities: &["London", "Manchester", "Leeds"],
    },
    Country {
        code: "ES",
        name: "Spain",
        legal_form: "S.L.",
        phone_prefix: "+34 91",
        registration_digits: 9,
        cities: &["Madrid", "Barcelona", "Valencia"],
    },
    Country {
        code: "US",
        name: "United States",
        legal_form: "Inc.",
        phone_prefix: "+1 415",
        registration_digits: 9,
        cities: &["San Francisco", "Austin", "Boston"],
    },
    Country {
        code: "NL",
        name: "Netherlands",
        legal_form: "B.V.",
        phone_prefix: "+31 20",
        registration_digits: 8,
        cities: &["Amsterdam", "Rotterdam"],
    },
];
const FIRST_NAMES: &[&str] = &[
    "Alice", "Bruno", "Chloé", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Inès", "Jamal",
    "Kenji", "Léa", "Mateo", "Nadia", "Oskar", "Paula",
];
const LAST_NAMES: &[&str] = &[
    "Martin", "Schmidt", "O'Neill", "García", "Rossi", "Nguyen", "Kowalski", "Dupont", "Jensen",
    "Silva", "Cohen", "Müller",
];
const STREETS: &[&str] = &[
    "rue de la Paix",
    "Hauptstraße",
    "High Street",
    "Calle Mayor",
    "Market Street",
    "Keizersgracht",
];
const INDUSTRIES: &[&str] = &[
    "Banking",
    "Consulting",
    "Manufacturing",
    "Retail",
    "Technology",
    "Healthcare",
];
const SOURCES: &[&str] = &["Web", "Phone Inquiry", "Partner Referral", "Other"];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// `count` realistic companies for this seed: no Id, ready for
/// `SalesforceSandbox::insert_accounts`.
pub fn generate_accounts(count: usize, seed: u64) -> Vec<Map<String, Value>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let owners = sales_user_ids();
    (0..count)
        .map(|index| {
            let country = pick(&mut rng, COUNTRIES);
            let stem = pick(&mut rng, NAME_STEMS);
            let sector = pick(&mut rng, NAME_SECTORS);
            // The index keeps names unique across large generated sets.
            let name = format!("{stem} {sector} {} #{}", country.legal_form, index + 1);
            let domain = format!(
                "{}-{}.example",
                stem.to_lowercase().replace(' ', ""),
                index + 1
            );
            let first = pick(&mut rng, FIRST_NAMES);
            let last = pick(&mut rng, LAST_NAMES);
            let kind = match rng.random_range(0..10) {
                0 => "Prospect",
                1 => "Partner",
                2 => "Other",
                _ => "Customer",
            };
            let registration: String = (0..country.registration_digits)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            let mut account = Map::new();
            account.insert("Name".into(), json!(name));
            account.insert("Type".into(), json!(kind));
            let source = (rng.random_range(0..4) != 0).then(|| *pick(&mut rng, SOURCES));
            account.insert("AccountSource".into(), json!(source));
            account.insert("Industry".into(), json!(pick(&mut rng, INDUSTRIES)));
            account.insert(
                "BillingStreet".into(),
                json!(format!(
                    "{} {}",
                    rng.random_range(1..200),
                    pick(&mut rng, STREETS)
                )),
            );
            account.insert("BillingCity".into(), json!(pick(&mut rng, country.cities)));
            account.insert(
                "BillingPostalCode".into(),
                json!(format!("{:05}", rng.random_range(1000..99999))),
            );
            account.insert("BillingCountry".into(), json!(country.name));
            account.insert("BillingCountryCode".into(), json!(country.code));
            account.insert(
                "Phone".into(),
                json!(format!(
                    "{} {:04} {:04}",
                    country.phone_prefix,
                    rng.random_range(0..10000),
                    rng.random_range(0..10000)
                )),
            );
            account.insert("Website".into(), json!(format!("https://www.{domain}")));
            account.insert(
                "AnnualRevenue".into(),
                json!(rng.random_range(1..5000) * 10_000),
            );
            account.insert("NumberOfEmployees".into(), json!(rng.random_range(1..5000)));
            account.insert("Registration_Number__c".into(), json!(registration));
            account.insert("Contact_First_Name__c".into(), json!(first));
            account.insert("Contact_Last_Name__c".into(), json!(last));
            account.insert(
                "Contact_Email__c".into(),
                json!(format!("{}@{domain}", first.to_lowercase())),
            );
            let birth = (rng.random_range(0..3) != 0).then(|| {
                format!(
                    "{}-{:02}-{:02}",
                    rng.random_range(1950..2002),
                    rng.random_range(1..13),
                    rng.random_range(1..29)
                )
            });
            account.insert("Date_Of_Birth__c".into(), json!(birth));
            account.insert("OwnerId".into(), json!(pick(&mut rng, &owners)));
            account
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_valid() {
        let first = generate_accounts(50, 7);
        assert_eq!(first, generate_accounts(50, 7));
        assert_ne!(first, generate_accounts(50, 8));
        let schema = data::account_schema();
        for account in &first {
            for (name, value) in account {
                let field = schema
                    .field(name)
                    .unwrap_or_else(|| panic!("unknown {name}"));
                data::coerce_write(field, value)
                    .unwrap_or_else(|error| panic!("{name} = {value}: {}", error.message));
            }
        }
        assert!(
            first
                .iter()
                .filter(|account| account["Type"] == "Customer")
                .count()
                > 25
        );
        assert!(
            first
                .iter()
                .any(|account| account["AccountSource"].is_null())
        );
    }
}
