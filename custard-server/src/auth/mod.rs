//! Authentication: the account security primitives (password hashing and
//! policy, random tokens and API keys, access JWTs), the browser's session
//! cookie and CSRF tokens (`cookie`), and the extractors that say who is
//! calling (`CurrentUser`, `CurrentAdmin`, `CurrentOwner`, `SessionUser`),
//! by a session (a JWT, as a bearer token or the browser's cookie) or, on
//! the API only, a personal access token.
//!
//! The primitives are pure (no IO besides the operating system's CSPRNG), so
//! their callers decide when to run them. Password hashing is slow on
//! purpose: the server calls [`hash_password`], [`verify_password`] and
//! [`dummy_verify`] only through `hashing::PasswordHashing`, which bounds them.
//! The extractors read the store through `AuthState`, which the server's
//! state implements.

mod caller;
pub(crate) mod cookie;
pub mod jwt;
pub mod passwords;
pub mod tokens;

pub use jwt::{
    ACCESS_TOKEN_TYPE, AccessClaims, DEFAULT_ACCESS_LIFETIME, JWT_AUDIENCE, JwtProblem, JwtSecret,
    decode_access, decode_access_at, encode_access,
};
pub use passwords::{
    MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, PasswordError, PasswordProblem, check_password_policy,
    dummy_verify, hash_password, needs_rehash, verify_password,
};
pub use tokens::{
    API_KEY_PREFIX, PERSONAL_TOKEN_PREFIX, hash_secret, hashes_equal, is_api_key,
    is_personal_token, new_api_key, new_personal_token, new_secret,
};

pub(crate) use caller::{
    AuthState, Credential, CurrentAdmin, CurrentOwner, CurrentUser, SessionUser, bearer_token,
};
