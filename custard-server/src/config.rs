//! Server configuration: one clap struct, every flag also a `CUSTARD_...`
//! variable; a `.env` file fills in what the environment leaves unset.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::store::StoreLocation;

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
    /// Where accounts, connections and the history are kept:
    /// `sqlite:PATH` (by default `sqlite:<data dir>/custard.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, a database several
    /// replicas can share.
    #[arg(long, env = "CUSTARD_STORE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// The most connections to a PostgreSQL store this replica opens.
    #[arg(long, env = "CUSTARD_STORE_POOL_SIZE", default_value_t = 16)]
    pub store_pool_size: usize,
    /// This server's name among replicas: the `custard_replica` label of its
    /// metrics. By default the machine's host name.
    #[arg(long, env = "CUSTARD_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// NATS, to route questions between replicas: `nats://HOST:4222` (or
    /// `tls://`; several comma-separated; user and password may be in the
    /// URL). Every replica sharing a PostgreSQL store needs it.
    #[arg(long, env = "CUSTARD_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// A NATS credentials file (`.creds`: JWT and NKey seed).
    #[arg(long, env = "CUSTARD_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,
    /// A PEM file of root certificates that NATS's TLS certificate chains to
    /// (requires TLS).
    #[arg(long, env = "CUSTARD_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// The first part of every NATS subject the replicas use; deployments
    /// sharing one NATS account keep apart by it.
    #[arg(long, env = "CUSTARD_NATS_SUBJECT_PREFIX", default_value = "custard")]
    pub nats_subject_prefix: String,
    /// How often two replicas relaying a question tell each other they are
    /// still there, in milliseconds (three missed: gone).
    #[arg(long, env = "CUSTARD_ROUTE_HEARTBEAT_MS", default_value_t = 1_000, hide = true)]
    pub route_heartbeat_ms: u64,
    /// Load balancers whose `X-Forwarded-For` names the client (IP addresses
    /// or CIDR ranges, comma-separated): per-address limits then count the
    /// client's address, not the balancer's.
    #[arg(long, env = "CUSTARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// The base URL links in emails point to.
    #[arg(long, env = "CUSTARD_PUBLIC_URL", default_value = "http://127.0.0.1:8000")]
    pub public_url: String,
    /// HS256 secret for access tokens; generated once into the data dir when unset.
    #[arg(long, env = "CUSTARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// SMTP server for email (smtp://user:pass@host:port); without it, emails go to the outbox.
    #[arg(long, env = "CUSTARD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The model that writes SQL, at an OpenAI-compatible endpoint; without it
    /// the offline engine answers.
    #[arg(long, env = "CUSTARD_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// The OpenAI-compatible endpoint, up to `/chat/completions` (default OpenAI's).
    #[arg(long, env = "CUSTARD_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// The endpoint's API key (also read from OPENAI_API_KEY).
    #[arg(long, env = "CUSTARD_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Start with a demo organisation, user and SQLite shop database served by
    /// an in-process agent (credentials are printed).
    #[arg(long, env = "CUSTARD_DEMO")]
    pub demo: bool,
    /// How long one question's query may run on the agent, in seconds.
    #[arg(long, env = "CUSTARD_QUERY_TIMEOUT_SECS", default_value_t = 30)]
    pub query_timeout_secs: u64,
    /// How often agents are pinged, in milliseconds; one silent for three
    /// intervals is dropped.
    #[arg(long, env = "CUSTARD_AGENT_HEARTBEAT_MS", default_value_t = 15_000, hide = true)]
    pub agent_heartbeat_ms: u64,
    /// The most agents one connection may have connected at once (several
    /// agents with one key share its questions); one more is refused with a
    /// close reason. 0: no limit.
    #[arg(long, env = "CUSTARD_MAX_AGENTS_PER_CONNECTION", default_value_t = 8)]
    pub max_agents_per_connection: usize,
    /// The most agents one organisation may have connected at once, over all
    /// its connections. 0: no limit.
    #[arg(long, env = "CUSTARD_MAX_AGENTS_PER_ORG", default_value_t = 64)]
    pub max_agents_per_org: usize,
    /// The most open connections, agents' WebSockets included; one more is
    /// answered 503 and closed.
    #[arg(long, env = "CUSTARD_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// The most open connections from one client address (agents behind one
    /// NAT address count together).
    #[arg(long, env = "CUSTARD_MAX_CONNECTIONS_PER_IP", default_value_t = 4_096)]
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers, and then its
    /// body, in milliseconds; idle keep-alive connections close after it too.
    #[arg(long, env = "CUSTARD_REQUEST_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_read_timeout_ms: u64,
    /// Questions one user may ask per minute (a burst of that many, then one
    /// every 60/N seconds); 0 for no limit. Beyond it: `429 rate_limited`.
    #[arg(long, env = "CUSTARD_QUESTIONS_PER_MINUTE", default_value_t = 120)]
    pub questions_per_minute: u32,
    /// Questions one organisation may have in flight at once; 0 for no limit.
    /// Beyond it: `429 too_many_questions`.
    #[arg(long, env = "CUSTARD_QUESTIONS_IN_FLIGHT_PER_ORG", default_value_t = 16)]
    pub questions_in_flight_per_org: u32,
    /// Passwords hashed or verified at once across the server (argon2id, 19
    /// MiB each); 0 for the number of cores. Callers beyond it wait up to the
    /// request read timeout, then get `503 server_busy`.
    #[arg(long, env = "CUSTARD_PASSWORD_HASH_CONCURRENCY", default_value_t = 0)]
    pub password_hash_concurrency: usize,
    /// How often a live status stream checks again that its session is
    /// active and its user still a member, in milliseconds (it also checks
    /// before each event it sends).
    #[arg(long, env = "CUSTARD_SESSION_RECHECK_MS", default_value_t = 30_000, hide = true)]
    pub session_recheck_ms: u64,
    /// The bearer token a Prometheus scraper sends to `GET /metrics`
    /// (`Authorization: Bearer <token>`); without it `/metrics` is off.
    #[arg(long, env = "CUSTARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// Which engine writes SQL, as configured.
#[derive(Clone, PartialEq, Eq)]
pub enum LlmSettings {
    /// The rule-based offline engine.
    Offline,
    /// An OpenAI-compatible endpoint.
    OpenAi {
        /// Base URL up to `/chat/completions`.
        base_url: String,
        /// The model name.
        model: String,
        /// The key, when one is set.
        api_key: Option<String>,
    },
}

impl fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmSettings::Offline => f.write_str("Offline"),
            LlmSettings::OpenAi { base_url, model, api_key } => f
                .debug_struct("OpenAi")
                .field("base_url", base_url)
                .field("model", model)
                .field("api_key", &api_key.is_some())
                .finish(),
        }
    }
}

impl ServerConfig {
    /// The LLM settings: a model when `llm_model` is set and not blank, the
    /// offline engine otherwise; a base URL without a model is a mistake.
    pub fn llm(&self) -> anyhow::Result<LlmSettings> {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let key = set(&self.llm_api_key)
            .map(str::to_owned)
            .or_else(|| std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.trim().is_empty()));
        match (set(&self.llm_model), set(&self.llm_base_url)) {
            (None, None) => Ok(LlmSettings::Offline),
            (None, Some(_)) => anyhow::bail!(
                "CUSTARD_LLM_BASE_URL is set but CUSTARD_LLM_MODEL is not: name the model to use"
            ),
            (Some(model), base_url) => Ok(LlmSettings::OpenAi {
                base_url: base_url
                    .unwrap_or(custard_core::llm::OpenAiConfig::OPENAI_BASE_URL)
                    .to_owned(),
                model: model.to_owned(),
                api_key: key,
            }),
        }
    }
}

impl ServerConfig {
    /// This server's name among replicas: `replica_name`, or the host name.
    pub fn replica(&self) -> String {
        self.replica_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .or_else(|| hostname::get().ok().and_then(|h| h.into_string().ok()))
            .unwrap_or_else(|| "custard-server".to_owned())
    }

    /// Where the store is: `store_url`, or the SQLite file in the data dir.
    pub fn store_location(&self) -> anyhow::Result<StoreLocation> {
        match self.store_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(StoreLocation::Sqlite(self.data_dir.join("custard.db"))),
            Some(url) => StoreLocation::parse(url),
        }
    }

    /// The connection caps and read deadline the server is served with.
    pub fn serve_limits(&self) -> crate::serve::ServeLimits {
        crate::serve::ServeLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            request_read_timeout: self.request_read_timeout(),
            drain: SHUTDOWN_DRAIN,
        }
    }

    /// How long a request's headers, and then its body, may take to arrive.
    pub fn request_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_read_timeout_ms.max(1))
    }

    /// How many passwords may be hashed or verified at once.
    pub fn password_hash_bound(&self) -> usize {
        match self.password_hash_concurrency {
            0 => crate::hashing::cores(),
            n => n,
        }
    }

    /// How to reach NATS, when routing between replicas is configured.
    pub fn nats(&self) -> anyhow::Result<Option<crate::hub::NatsSettings>> {
        let Some(url) = self.nats_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let prefix = self.nats_subject_prefix.trim();
        let token = |t: &str| {
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !prefix.split('.').all(token) {
            anyhow::bail!(
                "CUSTARD_NATS_SUBJECT_PREFIX must be dot-separated words of letters, digits, - and _ \
                 (got {prefix:?})"
            );
        }
        Ok(Some(crate::hub::NatsSettings {
            url: url.to_owned(),
            credentials: self.nats_credentials.clone(),
            root_certificates: self.nats_ca.clone(),
            replica: self.replica(),
            heartbeat: std::time::Duration::from_millis(self.route_heartbeat_ms.max(50)),
            subject_prefix: prefix.to_owned(),
            // Exports run ten times a question's timeout (questions/export.rs).
            max_query_timeout: std::time::Duration::from_secs(
                self.query_timeout_secs.max(1).saturating_mul(10),
            ),
        }))
    }

    /// How often a live status stream checks its session and membership again.
    pub fn session_recheck(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.session_recheck_ms.max(10))
    }
}

/// How long open requests and streams get to finish after SIGTERM or Ctrl-C.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

impl fmt::Debug for ServerConfig {
    // The JWT secret and the SMTP URL (with its password) are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("store", &self.store_location().map(|l| l.to_string()))
            .field("nats", &self.nats_url.as_deref().map(crate::hub::redact_nats_url))
            .field("public_url", &self.public_url)
            .field("smtp", &self.smtp_url.is_some())
            .field("metrics_token", &self.metrics_token.is_some())
            .field("llm_model", &self.llm_model)
            .field("llm_base_url", &self.llm_base_url)
            .field("demo", &self.demo)
            .field("questions_per_minute", &self.questions_per_minute)
            .field("questions_in_flight_per_org", &self.questions_in_flight_per_org)
            .finish_non_exhaustive()
    }
}
