//! The sandboxes' realistic latency profile: each endpoint waits its
//! log-normal draw. Only lower bounds are asserted (a loaded machine is
//! slower, never faster): three requests in a row to an endpoint take at
//! least one median, which three draws of these sigmas undercut with a
//! probability below one in ten thousand, and the draws are seeded.

use std::time::{Duration, Instant};

use ondorse_sandbox::latency::{Endpoint, LatencyProfile};
use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use ondorse_sandbox::salesforce::{SalesforceSandbox, SalesforceSandboxOptions};
use serde_json::{Value, json};

use crate::support::salesforce::{access_token, start_salesforce};

const REQUESTS: u32 = 3;

/// The median of one request to `endpoint` carrying `records` records.
fn median(endpoint: Endpoint, records: usize) -> Duration {
    LatencyProfile::Realistic
        .endpoint(endpoint)
        .expect("the realistic profile covers every endpoint")
        .median(records)
}

/// Sends `REQUESTS` requests one after the other; each must answer
/// `expected`; answers how long they took together.
async fn three_in_a_row(request: impl Fn() -> reqwest::RequestBuilder, expected: u16) -> Duration {
    let started = Instant::now();
    for _ in 0..REQUESTS {
        let response = request().send().await.expect("the sandbox answers");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{body}");
    }
    started.elapsed()
}

#[tokio::test]
async fn realistic_ondorse_waits_its_latency_on_portal_posts_and_application_reads() {
    let sandbox = OndorseSandbox::start(OndorseSandboxOptions {
        latency: LatencyProfile::Realistic,
        ..OndorseSandboxOptions::default()
    })
    .await
    .expect("the sandbox ondorse binds a loopback port");
    let http = reqwest::Client::new();
    let key = sandbox.options().api_key.clone();
    let posts = three_in_a_row(
        || {
            http.post(format!("{}/api/portals", sandbox.base_url()))
                .bearer_auth(&key)
                .json(&json!({"type": "business"}))
        },
        201,
    )
    .await;
    assert!(
        posts >= median(Endpoint::OndorsePortalPost, 0),
        "three portal posts took {posts:?}"
    );

    let portal = sandbox.portals()[0]["id"].as_str().unwrap().to_owned();
    let application = sandbox.submit_portal(&portal).expect("a portal to submit");
    let reads = three_in_a_row(
        || {
            http.get(format!(
                "{}/api/applications/{application}",
                sandbox.base_url()
            ))
            .bearer_auth(&key)
        },
        200,
    )
    .await;
    assert!(
        reads >= median(Endpoint::OndorseApplicationGet, 0),
        "three application reads took {reads:?}"
    );
    assert_eq!(sandbox.stats().portals_created, 3);
}

#[tokio::test]
async fn realistic_salesforce_waits_its_latency_on_tokens_queries_and_updates() {
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        latency: LatencyProfile::Realistic,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(200, 3));
    let http = reqwest::Client::new();

    let started = Instant::now();
    let mut token = String::new();
    for _ in 0..REQUESTS {
        token = access_token(&http, &sandbox).await;
    }
    let tokens = started.elapsed();
    assert!(
        tokens >= median(Endpoint::SalesforceToken, 0),
        "three token requests took {tokens:?}"
    );

    let api = format!("{}/services/data/v62.0", sandbox.instance_url());
    let queries = three_in_a_row(
        || {
            http.get(format!("{api}/query"))
                .bearer_auth(&token)
                .query(&[("q", "SELECT Id FROM Account")])
        },
        200,
    )
    .await;
    assert!(
        queries >= median(Endpoint::SalesforceQueryPage, 0),
        "three query pages took {queries:?}"
    );

    let single = three_in_a_row(
        || {
            http.patch(format!("{api}/sobjects/Account/{}", ids[0]))
                .bearer_auth(&token)
                .json(&json!({"Industry": "Banking"}))
        },
        204,
    )
    .await;
    assert!(
        single >= median(Endpoint::SalesforceSingleUpdate, 0),
        "three single-record updates took {single:?}"
    );

    let records: Vec<Value> = ids
        .iter()
        .map(|id| json!({"attributes": {"type": "Account"}, "id": id, "Industry": "Insurance"}))
        .collect();
    let composite = three_in_a_row(
        || {
            http.patch(format!("{api}/composite/sobjects"))
                .bearer_auth(&token)
                .json(&json!({"allOrNone": false, "records": records}))
        },
        200,
    )
    .await;
    // 250 ms + 3 ms per record: 850 ms for 200 records.
    assert_eq!(
        median(Endpoint::SalesforceCompositeUpdate, 200),
        Duration::from_millis(850)
    );
    assert!(
        composite >= median(Endpoint::SalesforceCompositeUpdate, 200),
        "three composite updates of 200 records took {composite:?}"
    );
    assert!(
        ids.iter()
            .all(|id| sandbox.account(id).unwrap()["Industry"] == json!("Insurance"))
    );
}
