//! Server configuration: one clap struct, every flag also a `CUSTARD_...`
//! variable; a `.env` file fills in what the environment leaves unset.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `custard-server` settings, with defaults that work on a fresh machine.
#[derive(Clone, clap::Parser)]
#[command(name = "custard-server", version, about = "Custard's hosted platform")]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "CUSTARD_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// Where the SQLite store, the JWT secret and the email outbox live.
    #[arg(long, env = "CUSTARD_DATA_DIR", default_value = "./custard-data")]
    pub data_dir: PathBuf,
    /// The base URL links in emails point to.
    #[arg(long, env = "CUSTARD_PUBLIC_URL", default_value = "http://127.0.0.1:8000")]
    pub public_url: String,
    /// HS256 secret for access tokens; generated once into the data dir when unset.
    #[arg(long, env = "CUSTARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// SMTP server for email (smtp://user:pass@host:port); without it, emails go to the outbox.
    #[arg(long, env = "CUSTARD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
}

impl fmt::Debug for ServerConfig {
    // The JWT secret and the SMTP URL (with its password) are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .field("smtp", &self.smtp_url.is_some())
            .finish_non_exhaustive()
    }
}
