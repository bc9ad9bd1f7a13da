//! Account security primitives: password hashing and policy, random tokens and
//! API keys, and access JWTs.
//!
//! Everything here is pure (no IO besides the operating system's CSPRNG), so the
//! HTTP layer and the store decide when to call it. Password hashing is slow on
//! purpose: call [`hash_password`], [`verify_password`] and [`dummy_verify`] on
//! a blocking thread (`tokio::task::spawn_blocking`).

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
pub use tokens::{API_KEY_PREFIX, hash_secret, hashes_equal, is_api_key, new_api_key, new_secret};
