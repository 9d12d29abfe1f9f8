//! Salesforce Ids: 15-char case-sensitive bodies and their 18-char form
//! with the case checksum, made by the sandbox for the records it creates.

/// The alphabet of the 15-char case-sensitive Id body, in ASCII order so
/// that counters of equal width sort like their numbers.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The alphabet of the 3-char checksum suffix of 18-char Ids.
const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
/// Characters between the key prefix and the counter: a pod marker and
/// padding, like `001Sb00000...`.
const ID_POD: &str = "Sb";

/// An 18-char Id for the `serial`-th record with this key prefix.
pub(crate) fn make_id(prefix: &str, serial: u64) -> String {
    let width = 15 - prefix.len() - ID_POD.len();
    let mut digits = vec![b'0'; width];
    let mut rest = serial;
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let body = format!(
        "{prefix}{ID_POD}{}",
        String::from_utf8(digits).expect("base62 digits are ASCII")
    );
    with_checksum(&body)
}

/// The 18-char form of a 15-char Id: one suffix char per 5-char chunk, whose
/// bits say which chars of the chunk are upper case.
fn with_checksum(body: &str) -> String {
    let mut id = String::with_capacity(18);
    id.push_str(body);
    for chunk in body.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, byte)| byte.is_ascii_uppercase())
            .fold(0usize, |bits, (position, _)| bits | (1 << position));
        id.push(CHECKSUM_ALPHABET[bits] as char);
    }
    id
}

/// The 18-char Id for a 15- or 18-char one, or `None` when it is malformed
/// (wrong length, non-alphanumeric, or a checksum that does not match).
pub(crate) fn normalize_id(id: &str) -> Option<String> {
    if !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(with_checksum(id)),
        18 => {
            let full = with_checksum(&id[..15]);
            // The suffix is case-insensitive in Salesforce.
            full.eq_ignore_ascii_case(id).then_some(full)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::data::ACCOUNT_PREFIX;

    #[test]
    fn ids_carry_the_case_checksum() {
        // A documented example: 15-char 001A0000006Vm9r → 18-char 001A0000006Vm9rIAC.
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(
            normalize_id("001A0000006Vm9rIAC").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(normalize_id("001A0000006Vm9rAAA"), None);
        assert_eq!(normalize_id("001A0000006Vm9"), None);
        assert_eq!(normalize_id("001A0000006Vm9r'; "), None);
    }

    #[test]
    fn generated_ids_sort_like_their_serials() {
        let first = make_id(ACCOUNT_PREFIX, 61);
        let second = make_id(ACCOUNT_PREFIX, 62);
        assert!(first < second, "{first} < {second}");
        assert_eq!(first.len(), 18);
        assert_eq!(normalize_id(&first), Some(first.clone()));
    }
}
