//! `custard-server`: the hosted platform (REST API, agent hub, accounts, web UI).
//!
//! Only the foundation exists so far: this binary says so and exits. The
//! platform is built on `custard-core` in the accounts and platform issues.

use clap::Parser;

/// Custard's hosted platform.
#[derive(Debug, Parser)]
#[command(name = "custard-server", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    Cli::parse();
    eprintln!(
        "custard-server {}: the hosted platform is not built yet; \
         use `custard-agent check-sql` and `custard-agent discover` meanwhile",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}
