//! Password hashing (argon2id with the OWASP ASVS parameters) and the password
//! policy checked at sign-up, reset and change.

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, PasswordHash, Version};
use zxcvbn::matching::patterns::MatchPattern;

/// The fewest characters (Unicode scalar values) a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The most characters (Unicode scalar values) a password may have.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Memory cost in KiB: 19 MiB (OWASP's argon2id minimum with t = 2, p = 1).
const MEMORY_KIB: u32 = 19 * 1024;
/// Number of passes over the memory.
const ITERATIONS: u32 = 2;
/// Degree of parallelism.
const PARALLELISM: u32 = 1;

/// The hash of a random password nobody knows, made with the parameters above;
/// `dummy_verify` checks against it so unknown emails cost as much as known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$MQj/viluQoI33mEqo4nwtA$eMxHlvoWohmOYxQYvfvtEmsjq624jMBeKil08gf/mkE";

/// Why hashing or verifying failed (never "wrong password": that is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The stored hash is not a PHC string (`$argon2id$v=19$...`).
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The hash function failed (bad parameters, no memory or no randomness).
    #[error("password hashing failed: {0}")]
    Hashing(password_hash::Error),
}

/// A password the policy refuses; the message is safe to show to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordProblem {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[error("password must have at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    /// A well-known password, a simple variant of one, or trivially guessable.
    #[error("password is too common, choose a less predictable one")]
    Common,
    /// The account's email address or the part before its `@`.
    #[error("password must not be your email address")]
    SameAsEmail,
    /// The user's name.
    #[error("password must not be your name")]
    SameAsName,
}

impl PasswordProblem {
    /// A stable machine-readable code for API errors.
    pub fn code(self) -> &'static str {
        match self {
            PasswordProblem::TooShort => "password_too_short",
            PasswordProblem::TooLong => "password_too_long",
            PasswordProblem::Common => "password_too_common",
            PasswordProblem::SameAsEmail => "password_is_email",
            PasswordProblem::SameAsName => "password_is_name",
        }
    }
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = argon2::Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| PasswordError::Hashing(e.into()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh random salt into a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$...`). Slow on purpose: run it on a
/// blocking thread.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let hash = hasher()?.hash_password(password.as_bytes()).map_err(PasswordError::Hashing)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored_hash` (compared in
/// constant time by the argon2 crate). Slow on purpose: run it on a blocking thread.
pub fn verify_password(password: &str, stored_hash: &str) -> Result<bool, PasswordError> {
    let parsed = parse_hash(stored_hash).ok_or(PasswordError::MalformedHash)?;
    match hasher()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(PasswordError::Hashing(e)),
    }
}

/// Spends the time of one [`verify_password`] and discards the result, for a
/// login with an unknown email, so timing does not reveal which emails exist.
pub fn dummy_verify(password: &str) {
    let _ = verify_password(password, DUMMY_HASH);
}

/// Whether `stored_hash` was made with other parameters than today's (or cannot
/// be read), so the login that just verified it should store a fresh hash.
pub fn needs_rehash(stored_hash: &str) -> bool {
    let Some(parsed) = parse_hash(stored_hash) else { return true };
    let Ok(params) = argon2::Params::try_from(&parsed) else { return true };
    parsed.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str()
        || parsed.version != Some(Version::V0x13.into())
        || params.m_cost() != MEMORY_KIB
        || params.t_cost() != ITERATIONS
        || params.p_cost() != PARALLELISM
}

/// A PHC string with both a salt and a hash (the parser accepts either missing).
fn parse_hash(stored_hash: &str) -> Option<PasswordHash> {
    PasswordHash::new(stored_hash).ok().filter(|p| p.salt.is_some() && p.hash.is_some())
}

/// Checks a new password for the account with `email` and the user's `names`
/// (first name, last name): length in characters, not the email or its local
/// part, not the name, and not common (zxcvbn's list of 30,000 common
/// passwords, with case, l33t and reversed variants, or trivially guessable,
/// the email and names counting as known words). Sign-up, reset and change
/// all pass the account's email and names.
pub fn check_password_policy(
    password: &str,
    email: &str,
    names: &[&str],
) -> Result<(), PasswordProblem> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordProblem::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordProblem::TooLong);
    }
    let candidate = normalize(password);
    let email = normalize(email);
    let local_part = email.rsplit_once('@').map_or(email.as_str(), |(local, _)| local);
    if candidate == email || candidate == local_part {
        return Err(PasswordProblem::SameAsEmail);
    }
    if same_as_name(&candidate, names) {
        return Err(PasswordProblem::SameAsName);
    }
    let mut known: Vec<&str> = vec![email.as_str(), local_part];
    known.extend(names.iter().copied().filter(|n| !n.trim().is_empty()));
    if is_common(password, &known) {
        return Err(PasswordProblem::Common);
    }
    Ok(())
}

fn normalize(text: &str) -> String {
    text.trim().to_lowercase()
}

fn same_as_name(candidate: &str, names: &[&str]) -> bool {
    let names: Vec<String> = names.iter().map(|n| normalize(n)).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return false;
    }
    names.iter().any(|n| n == candidate)
        || names.concat() == candidate
        || names.join(" ") == candidate
        || names.iter().rev().cloned().collect::<String>() == candidate
}

/// Common, or trivially guessable knowing `user_inputs` (the account's email and names).
fn is_common(password: &str, user_inputs: &[&str]) -> bool {
    let entropy = zxcvbn::zxcvbn(password, user_inputs);
    if entropy.score() == zxcvbn::Score::Zero {
        return true;
    }
    // One dictionary match spanning the whole password: a listed word, or its variant.
    match entropy.sequence() {
        // zxcvbn does not export its dictionary type; its default is the password list.
        [only] => matches!(
            &only.pattern,
            MatchPattern::Dictionary(word) if word.dictionary_name == Default::default()
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify_round_trips() {
        let hash = hash_password("correct horse battery staple").expect("hashing");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!needs_rehash(&hash));
        let cases = [
            ("correct horse battery staple", true),
            ("correct horse battery stapl", false),
            ("Correct horse battery staple", false),
            ("", false),
        ];
        for (password, expected) in cases {
            assert_eq!(
                verify_password(password, &hash).expect("verifying"),
                expected,
                "{password}"
            );
        }
    }

    #[test]
    fn same_password_hashes_differently() {
        let a = hash_password("same password").expect("hashing");
        let b = hash_password("same password").expect("hashing");
        assert_ne!(a, b, "salts must differ");
    }

    #[test]
    fn malformed_hash_is_an_error() {
        for stored in ["", "plaintext", "$argon2id$v=19$m=19456"] {
            assert!(
                matches!(verify_password("password", stored), Err(PasswordError::MalformedHash)),
                "{stored}"
            );
            assert!(needs_rehash(stored), "{stored}");
        }
    }

    #[test]
    fn old_parameters_need_rehash() {
        let weak = "$argon2id$v=19$m=4096,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    7hMWHp0uDMu3WYF1pR1SXJiAdaiQhx5ypZ5JTNo+/wo";
        assert!(!verify_password("password", weak).expect("verifying"));
        assert!(needs_rehash(weak));
    }

    #[test]
    fn dummy_hash_uses_current_parameters() {
        assert!(!needs_rehash(DUMMY_HASH), "regenerate DUMMY_HASH with hash_password");
        dummy_verify("anything");
    }

    fn check(password: &str, expected: Result<(), PasswordProblem>) {
        assert_eq!(
            check_password_policy(password, "Ada.Lovelace@Example.com", &["Ada", "Lovelace"]),
            expected,
            "{password:?}"
        );
    }

    #[test]
    fn policy() {
        use PasswordProblem::*;
        check("correct horse battery staple", Ok(()));
        check("tangerine-Obelisk-42", Ok(()));
        check("Zq8#vL2!", Ok(()));
        // Length counts characters, not bytes.
        check("x7#kQ2m", Err(TooShort));
        check("ünï€ød€", Err(TooShort));
        check("ünï€ød€ß", Ok(()));
        check("日本語のパスワ", Err(TooShort));
        check("日本語のパスワード", Ok(()));
        check(&"aB3$".repeat(32), Ok(()));
        check(&format!("{}x", "aB3$".repeat(32)), Err(TooLong));
        // Common passwords and their simple variants.
        check("password", Err(Common));
        check("PASSWORD", Err(Common));
        check("Password1", Err(Common));
        check("P@ssw0rd", Err(Common));
        check("12345678", Err(Common));
        check("qwertyuiop", Err(Common));
        check("iloveyou", Err(Common));
        check("1qaz2wsx", Err(Common));
        check("sunshine", Err(Common));
        check("football", Err(Common));
        check("aaaaaaaa", Err(Common));
        check("abcdefgh", Err(Common));
        // The account's own email and name.
        check("ada.lovelace@example.com", Err(SameAsEmail));
        check("Ada.Lovelace", Err(SameAsEmail));
        check("  ADA.LOVELACE@EXAMPLE.COM ", Err(SameAsEmail));
        check("adalovelace", Err(SameAsName));
        check("Ada Lovelace", Err(SameAsName));
        check("lovelace", Err(SameAsName));
        check("lovelaceada", Err(SameAsName));
        // Simple variants of them are guessable by whoever knows the account.
        check("L0v3l4c3", Err(Common));
        check("ecalevol", Err(Common));
        assert_eq!(check_password_policy("L0v3l4c3", "", &[]), Ok(()), "weak only for Ada");
    }

    #[test]
    fn problems_have_codes_and_messages() {
        assert_eq!(PasswordProblem::TooShort.code(), "password_too_short");
        assert_eq!(
            PasswordProblem::TooShort.to_string(),
            "password must have at least 8 characters"
        );
    }
}
