//! The hosted platform as a library: `app(state)` builds the whole HTTP API so
//! tests drive it in process, and `run` serves it.

mod accounts;
mod api;
pub mod auth;
pub mod config;
mod connections;
mod demo;
mod download;
mod error;
pub mod extract;
mod flash;
pub mod hashing;
pub mod hub;
#[cfg(test)]
mod layers;
pub mod mail;
mod mcp;
mod metrics;
mod openapi;
mod pipelines;
mod questions;
pub mod rate_limit;
mod routes;
pub mod secrets;
pub mod serve;
mod state;
pub mod store;
mod web;

pub use error::{AppError, ErrorCode};
pub use routes::{app, run};
pub use state::AppState;
