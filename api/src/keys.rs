//! API keys and admin tokens are stored as SHA-256 digests, so a config file
//! holds no usable secret. Every service hashes and compares them here, and
//! compares in constant time so that the time to reject a token tells an
//! attacker nothing about how many leading bytes were right.

use sha2::{Digest, Sha256};

/// The SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 of a token as lowercase hex (`printf %s TOKEN | sha256sum`),
/// the form the configs hold.
pub fn sha256_hex(token: &str) -> String {
    hex(&digest(token))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a digest.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Equal digests, compared in time independent of where they differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `token` hashes to `expected`, in constant time.
pub fn token_matches(token: &str, expected: &[u8; 32]) -> bool {
    digests_equal(&digest(token), expected)
}

/// The bearer token of an `Authorization` header value (`Bearer TOKEN`,
/// scheme case-insensitive).
pub fn bearer(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        // printf abc | sha256sum
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_and_compares_digests() {
        let hex = sha256_hex("secret");
        let parsed = parse_sha256_hex(&hex).unwrap();
        assert!(token_matches("secret", &parsed));
        assert!(!token_matches("secreT", &parsed));
        assert_eq!(parse_sha256_hex("abc"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer("Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer("bearer  sk-1 "), Some("sk-1"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("sk-1"), None);
    }
}
