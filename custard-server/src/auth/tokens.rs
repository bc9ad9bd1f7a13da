//! Random secrets (email verification, password reset, invitation tokens,
//! agent API keys and personal access tokens), the SHA-256 hashes the store
//! keeps of them, and a constant-time comparison of those hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Every agent API key starts with this, so leaked keys are easy to spot.
pub const API_KEY_PREFIX: &str = "custard_";

/// Every personal access token starts with this (and so never looks like an
/// agent API key, whose digits follow `custard_` at once).
pub const PERSONAL_TOKEN_PREFIX: &str = "custard_pat_";

/// Random bytes in every secret: 256 bits, twice ASVS's 128-bit floor.
const SECRET_BYTES: usize = 32;
/// Base62 digits that hold 32 bytes (62^43 > 2^256), so every key has one length.
const API_KEY_DIGITS: usize = 43;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_bytes() -> [u8; SECRET_BYTES] {
    let mut bytes = [0u8; SECRET_BYTES];
    // ThreadRng is a CSPRNG (ChaCha12) seeded and reseeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new single-use token for a link: 32 random bytes as URL-safe base64
/// without padding (43 characters).
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

/// A new agent API key: `custard_` and 32 random bytes in base62 (43 digits).
pub fn new_api_key() -> String {
    let mut key = String::with_capacity(API_KEY_PREFIX.len() + API_KEY_DIGITS);
    key.push_str(API_KEY_PREFIX);
    key.push_str(&base62(random_bytes()));
    key
}

/// A new personal access token: `custard_pat_` and 32 random bytes in base62
/// (43 digits).
pub fn new_personal_token() -> String {
    let mut token = String::with_capacity(PERSONAL_TOKEN_PREFIX.len() + API_KEY_DIGITS);
    token.push_str(PERSONAL_TOKEN_PREFIX);
    token.push_str(&base62(random_bytes()));
    token
}

/// Whether `text` has the shape of a personal access token (not whether one exists).
pub fn is_personal_token(text: &str) -> bool {
    text.strip_prefix(PERSONAL_TOKEN_PREFIX).is_some_and(|digits| {
        digits.len() == API_KEY_DIGITS && digits.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Whether `text` has the shape of an agent API key (not whether one exists).
pub fn is_api_key(text: &str) -> bool {
    text.strip_prefix(API_KEY_PREFIX).is_some_and(|digits| {
        digits.len() == API_KEY_DIGITS && digits.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The SHA-256 of a secret or API key as 64 lowercase hex digits: what the
/// store keeps, so a leaked database holds no usable token.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes without leaking, through timing, where they differ.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// `bytes` as one big-endian number in exactly `API_KEY_DIGITS` base62 digits.
fn base62(mut number: [u8; SECRET_BYTES]) -> String {
    let mut digits = [0u8; API_KEY_DIGITS];
    for digit in digits.iter_mut().rev() {
        // Long division of the whole number by 62; the remainder is the next digit.
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            // value < 62 * 256, so the quotient fits a byte.
            *byte = u8::try_from(value / 62).unwrap_or(u8::MAX);
            remainder = value % 62;
        }
        *digit = BASE62[remainder as usize];
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn secrets_are_long_url_safe_and_distinct() {
        let secrets: Vec<String> = (0..200).map(|_| new_secret()).collect();
        for s in &secrets {
            assert_eq!(s.len(), 43, "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{s}");
            assert_eq!(URL_SAFE_NO_PAD.decode(s).expect("base64url").len(), 32);
        }
        assert_eq!(secrets.iter().collect::<HashSet<_>>().len(), secrets.len());
    }

    #[test]
    fn secrets_look_random() {
        // Over 200 * 32 bytes every bit position should be set about half the time.
        let mut ones = [0u32; 8];
        for _ in 0..200 {
            for byte in URL_SAFE_NO_PAD.decode(new_secret()).expect("base64url") {
                for (bit, count) in ones.iter_mut().enumerate() {
                    *count += u32::from((byte >> bit) & 1);
                }
            }
        }
        for count in ones {
            assert!((2800..=3600).contains(&count), "{ones:?}");
        }
    }

    #[test]
    fn personal_tokens_have_their_own_format() {
        let tokens: Vec<String> = (0..200).map(|_| new_personal_token()).collect();
        for t in &tokens {
            assert!(t.starts_with("custard_pat_"), "{t}");
            assert_eq!(t.len(), 12 + 43, "{t}");
            assert!(is_personal_token(t), "{t}");
            // Never taken for an agent's key, nor a key for a token.
            assert!(!is_api_key(t), "{t}");
        }
        assert!(!is_personal_token(&new_api_key()));
        assert!(!is_personal_token("custard_pat_short"));
        assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), tokens.len());
    }

    #[test]
    fn api_keys_have_the_documented_format() {
        let keys: Vec<String> = (0..200).map(|_| new_api_key()).collect();
        for k in &keys {
            assert!(k.starts_with("custard_"), "{k}");
            assert_eq!(k.len(), 8 + 43, "{k}");
            assert!(is_api_key(k), "{k}");
        }
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len());
    }

    #[test]
    fn is_api_key_cases() {
        let good = format!("custard_{}", "a".repeat(43));
        let cases = [
            (good.as_str(), true),
            ("custard_", false),
            ("custard_abc", false),
            ("eyJhbGciOiJIUzI1NiJ9.e30.sig", false),
            (&good[..good.len() - 1], false),
        ];
        for (text, expected) in cases {
            assert_eq!(is_api_key(text), expected, "{text}");
        }
        assert!(!is_api_key(&format!("custard_{}-", "a".repeat(42))));
        assert!(!is_api_key(&format!("Custard_{}", "a".repeat(43))));
    }

    #[test]
    fn base62_encodes_big_endian_numbers() {
        let cases: [([u8; 32], &str); 3] = [
            ([0; 32], "0000000000000000000000000000000000000000000"),
            (
                {
                    let mut n = [0; 32];
                    n[31] = 62;
                    n
                },
                "0000000000000000000000000000000000000000010",
            ),
            ([0xff; 32], "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(base62(bytes), expected);
        }
    }

    #[test]
    fn hash_secret_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_secret(&new_secret()).len(), 64);
    }

    #[test]
    fn hashes_equal_cases() {
        let h = hash_secret("token");
        let cases = [
            (h.clone(), true),
            (hash_secret("Token"), false),
            (h[..63].to_owned(), false),
            (String::new(), false),
        ];
        for (other, expected) in cases {
            assert_eq!(hashes_equal(&h, &other), expected, "{other}");
        }
    }
}
