//! Browser sessions: the session cookie, and CSRF tokens for every form and
//! every cookie-authenticated API call that changes something.
//!
//! The session cookie holds an access JWT like the API's bearer token (same
//! claims, same revocable store session), marked `HttpOnly`, `SameSite=Lax`,
//! `Path=/`, and `Secure` when the public URL is https.
//!
//! CSRF uses signed double-submit: a random nonce in its own `HttpOnly`,
//! `SameSite=Lax` cookie, and a token that is the HMAC-SHA256 of that nonce
//! under the server's secret. Forms carry the token in a hidden field and
//! scripts in the `X-CSRF-Token` header; a request passes only when the token
//! matches its own cookie's nonce, which a cross-site page can neither read nor
//! forge. (`Lax`, not `Strict`: a link from another site, such as an emailed
//! one, must not arrive without the cookie, or a new nonce would expire the
//! forms of every open tab.) The nonce is replaced at every sign-in and
//! sign-out ([`fresh_csrf_cookie`]), so a nonce planted before signing in (by
//! someone able to set cookies for the site) is worthless afterwards.

use axum::http::HeaderMap;
use axum::http::header::{COOKIE, SET_COOKIE};
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::{self, JwtSecret};

/// The cookie that holds the browser's access token.
pub(crate) const SESSION_COOKIE: &str = "custard_session";
/// The cookie that holds the CSRF nonce.
pub(crate) const CSRF_COOKIE: &str = "custard_csrf";
/// The header scripts send the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Domain separation: this key use is for CSRF tokens only.
const CSRF_CONTEXT: &[u8] = b"custard csrf v1:";

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn mac(secret: &JwtSecret, nonce: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(CSRF_CONTEXT);
    mac.update(nonce.as_bytes());
    mac
}

/// The CSRF token for a nonce.
pub(crate) fn csrf_token(secret: &JwtSecret, nonce: &str) -> String {
    hex::encode(mac(secret, nonce).finalize().into_bytes())
}

/// Whether `token` is the CSRF token of `nonce` (compared in constant time).
pub(crate) fn csrf_valid(secret: &JwtSecret, nonce: &str, token: &str) -> bool {
    match hex::decode(token.trim()) {
        Ok(bytes) => !nonce.is_empty() && mac(secret, nonce).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Whether the request carries a CSRF token (header or the given form field
/// value) that matches its own CSRF cookie.
pub(crate) fn request_has_valid_csrf(
    secret: &JwtSecret,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> bool {
    let Some(nonce) = cookie_value(headers, CSRF_COOKIE) else { return false };
    // An empty field (a form without one) defers to the header htmx sends.
    let token = form_token
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned));
    token.is_some_and(|t| csrf_valid(secret, &nonce, &t))
}

/// The request's CSRF nonce, or a new one with the `Set-Cookie` header value
/// that stores it.
pub(crate) fn csrf_nonce(headers: &HeaderMap, secure: bool) -> (String, Option<String>) {
    if let Some(nonce) = cookie_value(headers, CSRF_COOKIE).filter(|n| !n.is_empty()) {
        return (nonce, None);
    }
    let (nonce, cookie) = new_nonce(secure);
    (nonce, Some(cookie))
}

/// A new nonce and the `Set-Cookie` value that stores it.
fn new_nonce(secure: bool) -> (String, String) {
    let nonce = auth::new_secret();
    let cookie = Cookie::build((CSRF_COOKIE, nonce.clone()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .build();
    (nonce, cookie.to_string())
}

/// `Set-Cookie` for a new CSRF nonce: sent when a session starts or ends.
pub(crate) fn fresh_csrf_cookie(secure: bool) -> String {
    new_nonce(secure).1
}

/// The `Set-Cookie` value that stores a browser session for `max_age`.
pub(crate) fn session_cookie(token: &str, max_age: std::time::Duration, secure: bool) -> String {
    Cookie::build((SESSION_COOKIE, token.to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .build()
        .to_string()
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_session_cookie(secure: bool) -> String {
    let mut cookie = Cookie::build((SESSION_COOKIE, "")).http_only(true).path("/").build();
    cookie.set_secure(secure);
    cookie.set_same_site(SameSite::Lax);
    cookie.make_removal();
    cookie.to_string()
}

/// Adds `Set-Cookie` headers to a response's headers.
pub(crate) fn set_cookies(headers: &mut HeaderMap, cookies: impl IntoIterator<Item = String>) {
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            headers.append(SET_COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> JwtSecret {
        JwtSecret::new("a test secret that is at least thirty-two bytes").expect("secret")
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_nonce_and_the_secret() {
        let token = csrf_token(&secret(), "nonce-1");
        assert!(csrf_valid(&secret(), "nonce-1", &token));
        assert!(!csrf_valid(&secret(), "nonce-2", &token));
        assert!(!csrf_valid(&secret(), "", &csrf_token(&secret(), "")));
        assert!(!csrf_valid(&secret(), "nonce-1", "not hex"));
        assert!(!csrf_valid(&secret(), "nonce-1", &token[..10]));
        let other = JwtSecret::new("another secret that is at least thirty-two bytes").unwrap();
        assert!(!csrf_valid(&other, "nonce-1", &token));
    }

    #[test]
    fn requests_pass_only_with_a_token_for_their_own_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=b; custard_csrf=n1".parse().unwrap());
        let token = csrf_token(&secret(), "n1");
        assert!(request_has_valid_csrf(&secret(), &headers, Some(&token)));
        assert!(!request_has_valid_csrf(&secret(), &headers, None));
        headers.insert(CSRF_HEADER, token.parse().unwrap());
        assert!(request_has_valid_csrf(&secret(), &headers, None));
        let forged = csrf_token(&secret(), "n2");
        assert!(!request_has_valid_csrf(&secret(), &headers, Some(&forged)));
        assert!(!request_has_valid_csrf(&secret(), &HeaderMap::new(), Some(&token)));
    }

    #[test]
    fn cookies_carry_the_security_attributes() {
        let session = session_cookie("tok", std::time::Duration::from_secs(60), true);
        for attribute in ["custard_session=tok", "HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(session.contains(attribute), "{session}");
        }
        let plain = session_cookie("tok", std::time::Duration::from_secs(60), false);
        assert!(!plain.contains("Secure"), "{plain}");
        let (nonce, cookie) = csrf_nonce(&HeaderMap::new(), false);
        let cookie = cookie.expect("a new nonce is set");
        assert!(cookie.contains(&nonce) && cookie.contains("SameSite=Lax"), "{cookie}");
        let cleared = clear_session_cookie(false);
        assert!(cleared.contains("custard_session=") && cleared.contains("Max-Age=0"), "{cleared}");
    }
}
