//! The JSON API under `/api/v1` (and the operators' `/health`, `/status`,
//! `/metrics`): one module per area, each handler with its OpenAPI operation
//! (`#[utoipa::path]`) and its request and response types.
//!
//! Handlers are thin: they parse the request (extractors, the body, the
//! path), call the logic of their area ([`crate::accounts`],
//! [`crate::connections`], [`crate::questions`]) and map its result to a
//! status and a body. No handler calls another, and only the router
//! (`routes`) uses this module.

pub(crate) mod accounts;
pub(crate) mod connections;
pub(crate) mod meta;
pub(crate) mod org;
pub(crate) mod queries;
pub(crate) mod tokens;
