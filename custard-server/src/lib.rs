//! The hosted platform as a library: `app(state)` builds the whole HTTP API so
//! tests drive it in process, and `run` serves it.

mod accounts;
pub mod auth;
pub mod config;
mod connections;
mod demo;
mod download;
mod error;
pub mod extract;
pub mod hashing;
pub mod hub;
pub mod mail;
mod metrics;
mod openapi;
mod queries;
pub mod rate_limit;
mod routes;
pub mod secrets;
pub mod serve;
pub mod store;
mod web;

pub use error::{AppError, ErrorCode};
pub use routes::{AppState, app, run};
