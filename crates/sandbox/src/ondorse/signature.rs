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
