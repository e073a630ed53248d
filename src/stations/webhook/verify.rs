//! Is a delivery from whoever holds the endpoint's secret? Two ways to say
//! so, both compared in constant time:
//!
//! - GitHub's `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw
//!   body keyed with the secret (checked with `Mac::verify_slice`);
//! - `Authorization: Bearer <secret>`, for senders that cannot sign.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// GitHub's signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// True when `header` (`sha256=<64 hex digits>`) is the HMAC-SHA256 of
/// `body` under `secret`.
pub fn github_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(sig) = decode_hex(hex) else {
        return false;
    };
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// True when `header` is `Bearer <secret>` (scheme case-insensitive).
/// Both sides are hashed first, so the comparison takes the same time
/// whatever their lengths.
pub fn bearer(secret: &str, header: &str) -> bool {
    let Some((scheme, token)) = header.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let given = Sha256::digest(token.trim().as_bytes());
    let wanted = Sha256::digest(secret.as_bytes());
    given.as_slice().ct_eq(wanted.as_slice()).into()
}

/// `sha256=` followed by this, for tests and senders written in Rust.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut out = String::from("sha256=");
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        mac.update(body);
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's published example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_example_verifies() {
        assert!(github_signature(SECRET, BODY, SIG));
        assert_eq!(sign(SECRET, BODY), SIG);
        assert!(github_signature(
            SECRET,
            BODY,
            &SIG.to_uppercase().replace("SHA256=", "sha256=")
        ));
    }

    #[test]
    fn anything_else_does_not() {
        assert!(!github_signature("wrong", BODY, SIG));
        assert!(!github_signature(SECRET, b"Hello, World?", SIG));
        assert!(!github_signature(SECRET, BODY, &SIG[..SIG.len() - 2]));
        assert!(!github_signature(
            SECRET,
            BODY,
            &SIG.replace("sha256=", "sha1=")
        ));
        assert!(!github_signature(SECRET, BODY, "sha256=zz"));
        assert!(!github_signature(SECRET, BODY, ""));
    }

    #[test]
    fn bearer_tokens() {
        assert!(bearer("s3cret", "Bearer s3cret"));
        assert!(bearer("s3cret", "bearer s3cret"));
        assert!(!bearer("s3cret", "Bearer s3cre"));
        assert!(!bearer("s3cret", "Basic s3cret"));
        assert!(!bearer("s3cret", "s3cret"));
        assert!(!bearer("s3cret", "Bearer "));
    }
}
