//! Short-lived access tokens for the API: HS256 JWTs whose algorithm, signature,
//! `exp`, `iat`, `aud` and `typ` are all checked, carrying the session id that
//! logout and password reset revoke.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

/// The `aud` of every access token.
pub const JWT_AUDIENCE: &str = "custard-api";
/// The `typ` claim of an access token (other token kinds must not pass as one).
pub const ACCESS_TOKEN_TYPE: &str = "access";
/// How long an access token lives unless the host configures otherwise.
pub const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Clock skew tolerated on `exp` and `iat`, in seconds.
const LEEWAY_SECONDS: u64 = 30;
/// The shortest HS256 key accepted: the hash's output size (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;

/// The signing key for access tokens; never printed, even by `Debug`.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    /// A secret from text (such as `CUSTARD_JWT_SECRET`): its UTF-8 bytes are the
    /// key, at least 32 of them.
    pub fn new(text: &str) -> Result<JwtSecret, JwtProblem> {
        if text.len() < MIN_SECRET_BYTES {
            return Err(JwtProblem::SecretTooShort);
        }
        Ok(JwtSecret(text.as_bytes().to_vec()))
    }

    /// A new random secret: 48 bytes from the CSPRNG as URL-safe base64 text.
    pub fn generate() -> JwtSecret {
        let mut bytes = [0u8; 48];
        rand::rng().fill_bytes(&mut bytes);
        JwtSecret(URL_SAFE_NO_PAD.encode(bytes).into_bytes())
    }

    /// The secret's text, to keep it in a file readable by the server only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user's id.
    pub sub: String,
    /// The session's id, looked up on each request so a revoked session fails.
    pub sid: String,
    /// The organisation the token acts in.
    pub org: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Always [`JWT_AUDIENCE`].
    pub aud: String,
    /// Always [`ACCESS_TOKEN_TYPE`].
    pub typ: String,
    /// The issuer (the public URL), when the host sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl AccessClaims {
    /// Claims for `user` in `session` and `org`, issued at `now` (Unix seconds)
    /// and valid for `lifetime` (see [`DEFAULT_ACCESS_LIFETIME`]).
    pub fn new(
        user: impl Into<String>,
        session: impl Into<String>,
        org: impl Into<String>,
        now: u64,
        lifetime: Duration,
    ) -> AccessClaims {
        AccessClaims {
            sub: user.into(),
            sid: session.into(),
            org: org.into(),
            iat: now,
            exp: now.saturating_add(lifetime.as_secs()),
            aud: JWT_AUDIENCE.to_owned(),
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            iss: None,
        }
    }

    /// The same claims with an issuer.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> AccessClaims {
        self.iss = Some(issuer.into());
        self
    }

    /// Seconds from `iat` to `exp`: the `expires_in` of a login response.
    pub fn lifetime_seconds(&self) -> u64 {
        self.exp.saturating_sub(self.iat)
    }
}

/// Why a token was not accepted, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtProblem {
    /// Not three base64url parts with JSON header and claims of the right shape.
    #[error("token is malformed")]
    Malformed,
    /// The header names another algorithm than HS256 (including `none`).
    #[error("token algorithm is not allowed")]
    WrongAlgorithm,
    /// The signature does not match the content.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token has expired")]
    Expired,
    /// `iat` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `aud` is not [`JWT_AUDIENCE`].
    #[error("token audience is wrong")]
    WrongAudience,
    /// `typ` is not [`ACCESS_TOKEN_TYPE`].
    #[error("token type is wrong")]
    WrongType,
    /// A secret shorter than 32 bytes.
    #[error("jwt secret must have at least 32 bytes")]
    SecretTooShort,
    /// Signing failed.
    #[error("token could not be signed")]
    Signing,
}

/// Signs `claims` into a compact HS256 JWT.
pub fn encode_access(claims: &AccessClaims, secret: &JwtSecret) -> Result<String, JwtProblem> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(&secret.0),
    )
    .map_err(|_| JwtProblem::Signing)
}

/// Checks `token` at the current time and returns its claims.
pub fn decode_access(token: &str, secret: &JwtSecret) -> Result<AccessClaims, JwtProblem> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    decode_access_at(token, secret, now)
}

/// Checks `token` as of `now` (Unix seconds) and returns its claims: the header
/// must say exactly HS256, the signature must match, `aud` and `typ` must be
/// the access token's, and `iat <= now < exp` within a small leeway.
pub fn decode_access_at(
    token: &str,
    secret: &JwtSecret,
    now: u64,
) -> Result<AccessClaims, JwtProblem> {
    // Read the header ourselves so `none` and unknown algorithms are named as such.
    if header_algorithm(token)?.as_str() != "HS256" {
        return Err(JwtProblem::WrongAlgorithm);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // Time is checked below against `now`, which tests can set.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_audience(&[JWT_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AccessClaims>(
        token,
        &DecodingKey::from_secret(&secret.0),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => JwtProblem::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => JwtProblem::WrongAlgorithm,
        ErrorKind::InvalidAudience => JwtProblem::WrongAudience,
        ErrorKind::ExpiredSignature => JwtProblem::Expired,
        _ => JwtProblem::Malformed,
    })?
    .claims;
    if claims.typ != ACCESS_TOKEN_TYPE {
        return Err(JwtProblem::WrongType);
    }
    if claims.exp.saturating_add(LEEWAY_SECONDS) <= now {
        return Err(JwtProblem::Expired);
    }
    if claims.iat > now.saturating_add(LEEWAY_SECONDS) {
        return Err(JwtProblem::NotYetValid);
    }
    Ok(claims)
}

fn header_algorithm(token: &str) -> Result<String, JwtProblem> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
    }
    let encoded = token.split('.').next().ok_or(JwtProblem::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| JwtProblem::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| JwtProblem::Malformed)?;
    Ok(header.alg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn secret() -> JwtSecret {
        JwtSecret::new("a test secret that is long enough for hs256").expect("secret")
    }

    fn claims() -> AccessClaims {
        AccessClaims::new("user-1", "session-1", "org-1", NOW, DEFAULT_ACCESS_LIFETIME)
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// A token with any header and claims, signed with HMAC-SHA256 by hand.
    fn forge(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(key),
            Algorithm::HS256,
        )
        .expect("signing");
        format!("{signing_input}.{signature}")
    }

    fn good_claims_json() -> serde_json::Value {
        serde_json::to_value(claims()).expect("claims json")
    }

    #[test]
    fn good_token_is_accepted() {
        let token = encode_access(&claims(), &secret()).expect("encoding");
        assert_eq!(token.split('.').count(), 3);
        for now in [NOW, NOW + 1, NOW + 15 * 60 - 1, NOW - 10] {
            assert_eq!(decode_access_at(&token, &secret(), now), Ok(claims()), "at {now}");
        }
        let with_issuer = claims().with_issuer("http://127.0.0.1:8000");
        let token = encode_access(&with_issuer, &secret()).expect("encoding");
        assert_eq!(decode_access_at(&token, &secret(), NOW), Ok(with_issuer));
        assert_eq!(claims().lifetime_seconds(), 900);
    }

    #[test]
    fn current_time_is_used_by_default() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let fresh = AccessClaims::new("u", "s", "o", now, DEFAULT_ACCESS_LIFETIME);
        let token = encode_access(&fresh, &secret()).expect("encoding");
        assert_eq!(decode_access(&token, &secret()), Ok(fresh));
        let old = AccessClaims::new("u", "s", "o", now - 3600, DEFAULT_ACCESS_LIFETIME);
        let token = encode_access(&old, &secret()).expect("encoding");
        assert_eq!(decode_access(&token, &secret()), Err(JwtProblem::Expired));
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let key = secret();
        let good = encode_access(&claims(), &key).expect("encoding");
        let (signing_input, signature) = good.rsplit_once('.').expect("three parts");
        let hs256 = json!({"alg": "HS256", "typ": "JWT"});
        let with = |field: &str, value: serde_json::Value| {
            let mut c = good_claims_json();
            c[field] = value;
            forge(hs256.clone(), c, key.expose())
        };
        let without = |field: &str| {
            let mut c = good_claims_json();
            c.as_object_mut().expect("object").remove(field);
            forge(hs256.clone(), c, key.expose())
        };
        let tampered_claims = {
            let mut c = good_claims_json();
            c["sub"] = json!("user-2");
            format!("{}.{}.{signature}", b64(&hs256), b64(&c))
        };
        let mut flipped = signature.to_owned();
        let last = if flipped.ends_with('A') { "B" } else { "A" };
        flipped.replace_range(flipped.len() - 1.., last);

        let cases: Vec<(&str, String, JwtProblem)> = vec![
            (
                "alg none, no signature",
                format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "typ": "JWT"})),
                    b64(&good_claims_json())
                ),
                JwtProblem::WrongAlgorithm,
            ),
            (
                "alg None with the old signature",
                format!(
                    "{}.{}.{signature}",
                    b64(&json!({"alg": "None"})),
                    b64(&good_claims_json())
                ),
                JwtProblem::WrongAlgorithm,
            ),
            (
                "RS256 header",
                format!(
                    "{}.{}.{signature}",
                    b64(&json!({"alg": "RS256", "typ": "JWT"})),
                    b64(&good_claims_json())
                ),
                JwtProblem::WrongAlgorithm,
            ),
            (
                "HS512 header",
                format!(
                    "{}.{}.{signature}",
                    b64(&json!({"alg": "HS512"})),
                    b64(&good_claims_json())
                ),
                JwtProblem::WrongAlgorithm,
            ),
            ("tampered claims", tampered_claims, JwtProblem::BadSignature),
            ("tampered signature", format!("{signing_input}.{flipped}"), JwtProblem::BadSignature),
            ("no signature", format!("{signing_input}."), JwtProblem::BadSignature),
            (
                "other secret",
                encode_access(&claims(), &JwtSecret::generate()).expect("encoding"),
                JwtProblem::BadSignature,
            ),
            ("wrong audience", with("aud", json!("custard-admin")), JwtProblem::WrongAudience),
            ("wrong typ", with("typ", json!("refresh")), JwtProblem::WrongType),
            ("expired", with("exp", json!(NOW - 60)), JwtProblem::Expired),
            ("issued in the future", with("iat", json!(NOW + 3600)), JwtProblem::NotYetValid),
            ("missing exp", without("exp"), JwtProblem::Malformed),
            ("missing aud", without("aud"), JwtProblem::Malformed),
            ("missing typ", without("typ"), JwtProblem::Malformed),
            ("missing sid", without("sid"), JwtProblem::Malformed),
            ("empty", String::new(), JwtProblem::Malformed),
            ("garbage", "not.a.jwt".to_owned(), JwtProblem::Malformed),
            ("two parts", signing_input.to_owned(), JwtProblem::Malformed),
        ];
        for (name, token, expected) in cases {
            assert_eq!(decode_access_at(&token, &key, NOW), Err(expected), "{name}: {token}");
        }
    }

    #[test]
    fn expiry_has_a_small_leeway() {
        let token = encode_access(&claims(), &secret()).expect("encoding");
        let exp = NOW + 15 * 60;
        let cases = [
            (exp, Ok(())),
            (exp + LEEWAY_SECONDS - 1, Ok(())),
            (exp + LEEWAY_SECONDS, Err(JwtProblem::Expired)),
            (exp + 3600, Err(JwtProblem::Expired)),
            (NOW - LEEWAY_SECONDS, Ok(())),
            (NOW - LEEWAY_SECONDS - 1, Err(JwtProblem::NotYetValid)),
        ];
        for (now, expected) in cases {
            assert_eq!(decode_access_at(&token, &secret(), now).map(|_| ()), expected, "at {now}");
        }
    }

    #[test]
    fn secrets_are_long_and_never_printed() {
        assert_eq!(JwtSecret::new("short").map(|_| ()), Err(JwtProblem::SecretTooShort));
        assert_eq!(JwtSecret::new(&"x".repeat(31)).map(|_| ()), Err(JwtProblem::SecretTooShort));
        assert!(JwtSecret::new(&"x".repeat(32)).is_ok());
        let generated = JwtSecret::generate();
        assert_eq!(generated.expose().len(), 64);
        let text = std::str::from_utf8(generated.expose()).expect("utf-8");
        assert!(JwtSecret::new(text).is_ok());
        assert_ne!(generated.expose(), JwtSecret::generate().expose());
        let debug = format!("{generated:?} {:?}", secret());
        assert_eq!(debug, "JwtSecret(<redacted>) JwtSecret(<redacted>)");
        assert!(!debug.contains(text));
    }
}
