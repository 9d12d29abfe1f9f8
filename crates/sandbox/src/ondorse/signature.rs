//! Webhook signing as the Ondorse contract describes it (optional, when a
//! signing secret is set): `Ondorse-Signature: t=<unix seconds>,v1=<hex>`,
//! where the hex is the HMAC-SHA256 of `"<t>.<raw body>"` under the secret.
//!
//! Written from the contract, not borrowed from the product's verifier: a
//! wrong format on either side makes the product refuse the webhooks.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Ondorse signs its webhooks in.
pub const SIGNATURE_HEADER: &str = "Ondorse-Signature";

/// The `Ondorse-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_the_contract_format_with_an_independently_computed_hmac() {
        // Expected value computed outside Rust (Python's hmac module) from
        // the contract's recipe: HMAC-SHA256 of "<t>.<raw body>", hex.
        let body = br#"{"event_id":"evt_01","type":"application.review_updated"}"#;
        assert_eq!(
            signature_header(b"sandbox-signing-secret", 1_764_400_000, body),
            "t=1764400000,v1=0822594bbf4f433f579d40a8ae5d55ba7f496490fa3892d31124336ed4425152"
        );
    }
}
