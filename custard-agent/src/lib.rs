//! The Custard agent as a library: the `run` loop that keeps a WebSocket
//! session with the server and answers its requests with read-only SQL, so the
//! binary and the tests drive the same code.

mod agent;
pub mod backoff;
pub mod config;
pub mod health;
mod logs;
pub mod mcp;
pub mod privileges;
mod session;
mod startup;
mod state;
mod tls;

pub use agent::{run, run_with_backoff, runtime};
pub use tls::install_crypto_provider;
