//! Outgoing email: SMTP through lettre when `CUSTARD_SMTP_URL` is set,
//! otherwise an outbox folder of `.eml` files whose links are logged, so a new
//! user can verify an account on a laptop with no mail server.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngCore as _;

/// The public base URL links point to when `CUSTARD_PUBLIC_URL` is not set.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8000";
/// The sender when none is configured.
pub const DEFAULT_FROM: &str = "Custard <no-reply@localhost>";
/// The outbox folder's name inside the data dir.
pub const OUTBOX_DIR: &str = "outbox";
/// How long one SMTP exchange may take before it fails.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters kept as they are in a link's query value (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// One plain-text email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text_body: String,
    /// The link the email is about, logged by the outbox backend.
    pub link: Option<String>,
}

/// Why an email could not be set up or sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// The recipient or sender is not a valid address.
    #[error("invalid email address {0:?}")]
    InvalidAddress(String),
    /// `CUSTARD_SMTP_URL` cannot be used (the reason never includes the URL's password).
    #[error("invalid smtp url: {0}")]
    InvalidSmtpUrl(String),
    /// The message could not be assembled.
    #[error("building the email failed: {0}")]
    Build(String),
    /// The SMTP server refused the message or could not be reached.
    #[error("smtp delivery failed: {0}")]
    Smtp(String),
    /// The outbox file could not be written.
    #[error("writing to the outbox failed: {0}")]
    Outbox(#[from] std::io::Error),
}

/// Sends email through SMTP or into the outbox folder; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Smtp { transport: AsyncSmtpTransport<Tokio1Executor>, server: String },
    Outbox { dir: PathBuf },
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so the SMTP credentials never reach a log.
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("backend", &self.describe())
            .finish()
    }
}

impl Mailer {
    /// SMTP when `smtp_url` is set (and not blank), else the outbox in `data_dir/outbox`.
    pub fn from_settings(
        smtp_url: Option<&str>,
        data_dir: &Path,
        from: &str,
    ) -> Result<Mailer, MailError> {
        match smtp_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Mailer::smtp(url, from),
            None => Mailer::outbox(data_dir.join(OUTBOX_DIR), from),
        }
    }

    /// Sends through the SMTP server of `url`: `smtp://host:25` (plain, or add
    /// `?tls=none`), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`
    /// (TLS); credentials as `smtp://user:pass@host`, percent-encoded.
    pub fn smtp(url: &str, from: &str) -> Result<Mailer, MailError> {
        let url = without_tls_none(url);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|e| MailError::InvalidSmtpUrl(e.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mailer {
            from: parse_mailbox(from)?,
            backend: Backend::Smtp { transport, server: redacted_server(&url) },
        })
    }

    /// Writes every message as an `.eml` file into `dir` (created when missing).
    pub fn outbox(dir: impl Into<PathBuf>, from: &str) -> Result<Mailer, MailError> {
        Ok(Mailer { from: parse_mailbox(from)?, backend: Backend::Outbox { dir: dir.into() } })
    }

    /// Where messages go, without credentials, for the startup log and `/status`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Smtp { server, .. } => format!("smtp {server}"),
            Backend::Outbox { dir } => format!("outbox {}", dir.display()),
        }
    }

    /// The outbox folder, when this mailer writes files instead of sending.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Outbox { dir } => Some(dir),
            Backend::Smtp { .. } => None,
        }
    }

    /// Sends `message` (or writes it to the outbox).
    pub async fn send(&self, message: &Message) -> Result<(), MailError> {
        let email = self.build(message)?;
        match &self.backend {
            Backend::Smtp { transport, server } => {
                transport.send(email).await.map_err(|e| MailError::Smtp(e.to_string()))?;
                tracing::debug!(to = %message.to, subject = %message.subject, %server, "email sent");
            }
            Backend::Outbox { dir } => {
                let path = write_outbox(dir.clone(), email.formatted()).await?;
                // The link is the point of the outbox: it is how a local user verifies.
                tracing::info!(
                    to = %message.to,
                    subject = %message.subject,
                    link = message.link.as_deref().unwrap_or("-"),
                    path = %path.display(),
                    "email written to the outbox"
                );
            }
        }
        Ok(())
    }

    fn build(&self, message: &Message) -> Result<lettre::Message, MailError> {
        lettre::Message::builder()
            .from(self.from.clone())
            .to(parse_mailbox(&message.to)?)
            .subject(one_line(&message.subject))
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(readable_body(&message.text_body)),
            )
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

/// The email that confirms an address after sign-up.
pub fn verification_email(public_url: &str, to: &str, token: &str) -> Message {
    // The web page verifies and says so; API clients can still take the token
    // to `GET /api/v1/auth/verify-email`.
    let link = link(public_url, "/verify-email", token);
    Message {
        to: to.to_owned(),
        subject: "Verify your email address for Custard".to_owned(),
        text_body: format!(
            "Welcome to Custard!\n\n\
             Open this link to verify your email address:\n\n{link}\n\n\
             The link is valid for 24 hours. If you did not sign up, ignore this email.\n"
        ),
        link: Some(link),
    }
}

/// The email with a link to choose a new password.
pub fn password_reset_email(public_url: &str, to: &str, token: &str) -> Message {
    let link = link(public_url, "/reset-password", token);
    Message {
        to: to.to_owned(),
        subject: "Reset your Custard password".to_owned(),
        text_body: format!(
            "Someone asked to reset the password of your Custard account.\n\n\
             Open this link to choose a new password:\n\n{link}\n\n\
             The link is valid for 1 hour and works once. Resetting signs you out everywhere.\n\
             If you did not ask for this, ignore this email: your password stays the same.\n"
        ),
        link: Some(link),
    }
}

/// The email sent instead of a verification email when someone signs up with
/// an address that already has an account: the sign-up answered as for a new
/// address, so only the address's owner learns that it has one. With
/// `verify_token` (the account was never verified) it carries a fresh
/// verification link too.
pub fn existing_account_email(public_url: &str, to: &str, verify_token: Option<&str>) -> Message {
    let base = public_url.trim().trim_end_matches('/');
    let (sign_in, forgot) = (format!("{base}/login"), format!("{base}/forgot-password"));
    let verify = verify_token.map(|token| link(public_url, "/verify-email", token));
    let verify_text = verify.as_deref().map_or_else(String::new, |link| {
        format!(
            "The account's address is not verified yet. Open this link to verify it \
             (valid for 24 hours):\n\n{link}\n\n"
        )
    });
    Message {
        to: to.to_owned(),
        subject: "Someone tried to sign up for Custard with your address".to_owned(),
        text_body: format!(
            "Someone, maybe you, tried to create a Custard account with this email address, \
             which already has an account. No new account was created and nothing was changed.\n\n\
             {verify_text}\
             To use your account, sign in:\n\n{sign_in}\n\n\
             If you forgot your password, reset it:\n\n{forgot}\n\n\
             If it was not you, ignore this email.\n"
        ),
        link: Some(verify.unwrap_or(sign_in)),
    }
}

/// The email that invites `to` into `organization`, sent on behalf of `invited_by`.
pub fn invitation_email(
    public_url: &str,
    to: &str,
    token: &str,
    organization: &str,
    invited_by: &str,
) -> Message {
    let link = link(public_url, "/accept-invitation", token);
    let organization = one_line(organization);
    let invited_by = one_line(invited_by);
    Message {
        to: to.to_owned(),
        subject: format!("You are invited to join {organization} on Custard"),
        text_body: format!(
            "{invited_by} invited you to join the organisation {organization} on Custard.\n\n\
             Open this link to accept the invitation:\n\n{link}\n\n\
             If you did not expect this invitation, ignore this email.\n"
        ),
        link: Some(link),
    }
}

/// `public_url` + `path` + `?token=` and the percent-encoded token.
fn link(public_url: &str, path: &str, token: &str) -> String {
    let base = public_url.trim().trim_end_matches('/');
    format!("{base}{path}?token={}", utf8_percent_encode(token, QUERY_VALUE))
}

fn parse_mailbox(address: &str) -> Result<Mailbox, MailError> {
    address.trim().parse().map_err(|_| MailError::InvalidAddress(address.to_owned()))
}

/// User-provided text in a header or a one-line slot: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A body that keeps links readable in the raw message: 7bit (ASCII) or 8bit
/// as written, quoted-printable or base64 only when a line is too long for SMTP.
fn readable_body(text: &str) -> Body {
    let crlf = text.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n");
    // RFC 5321 caps lines at 1000 octets with CRLF; 7bit and 8bit also forbid NUL.
    let fits = crlf.split("\r\n").all(|line| line.len() <= 998) && !crlf.contains('\0');
    if !fits {
        return Body::new(crlf);
    }
    let encoding = if crlf.is_ascii() {
        ContentTransferEncoding::SevenBit
    } else {
        ContentTransferEncoding::EightBit
    };
    // lettre's own check wants lines under 76 characters, which would wrap the link.
    Body::dangerous_pre_encoded(crlf.into_bytes(), encoding)
}

/// lettre spells plain SMTP as no `tls` parameter; `?tls=none` is accepted as an alias.
fn without_tls_none(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let kept: Vec<&str> =
        query.split('&').filter(|p| !p.eq_ignore_ascii_case("tls=none")).collect();
    if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
}

/// `scheme://host:port` of an SMTP URL, without user, password or query.
fn redacted_server(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("smtp", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{}", host.trim_end_matches('/'))
}

/// Writes `raw` to a new `.eml` file in `dir` atomically (a hidden temp file,
/// then a rename), readable by the server's user only since it holds a token.
async fn write_outbox(dir: PathBuf, raw: Vec<u8>) -> Result<PathBuf, MailError> {
    let mut suffix = [0u8; 4];
    rand::rng().fill_bytes(&mut suffix);
    let name =
        format!("{}-{}.eml", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"), hex::encode(suffix));
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&dir)?;
        let temp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(name);
        let result = write_file(&temp, &raw).and_then(|()| std::fs::rename(&temp, &path));
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map(|()| path)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use custard_testkit::smtp_sink::SmtpSink;

    use super::*;

    const TOKEN: &str = "Ab-_9z.~+/=?&%";
    const ENCODED: &str = "Ab-_9z.~%2B%2F%3D%3F%26%25";

    #[test]
    fn links_point_at_the_public_url_with_an_encoded_token() {
        let cases = [
            (
                verification_email("http://127.0.0.1:8000", "a@example.com", TOKEN),
                format!("http://127.0.0.1:8000/verify-email?token={ENCODED}"),
            ),
            (
                password_reset_email("https://custard.example/", "a@example.com", TOKEN),
                format!("https://custard.example/reset-password?token={ENCODED}"),
            ),
            (
                invitation_email("https://x.example/app", "a@example.com", TOKEN, "Acme", "Ada"),
                format!("https://x.example/app/accept-invitation?token={ENCODED}"),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(message.link.as_deref(), Some(expected.as_str()));
            assert!(message.text_body.contains(&expected), "{}", message.text_body);
            assert_eq!(message.to, "a@example.com");
        }
    }

    #[test]
    fn an_existing_account_is_told_how_to_sign_in_and_verified_only_when_it_is_not() {
        let cases = [
            (None, "https://custard.example/login".to_owned(), false),
            (Some(TOKEN), format!("https://custard.example/verify-email?token={ENCODED}"), true),
        ];
        for (token, link, verifies) in cases {
            let m = existing_account_email("https://custard.example/", "a@example.com", token);
            assert_eq!((m.to.as_str(), m.link.as_deref()), ("a@example.com", Some(link.as_str())));
            for part in [
                "already has an account",
                "https://custard.example/login",
                "https://custard.example/forgot-password",
            ] {
                assert!(m.text_body.contains(part), "{part}: {}", m.text_body);
            }
            assert_eq!(m.text_body.contains("/verify-email?token="), verifies, "{}", m.text_body);
        }
    }

    #[test]
    fn invitation_names_the_organisation_and_inviter_on_one_line() {
        let m = invitation_email(DEFAULT_PUBLIC_URL, "b@example.com", "t", "Acme\r\nBcc: x", "Ada");
        assert_eq!(m.subject, "You are invited to join Acme  Bcc: x on Custard");
        assert!(m.text_body.starts_with("Ada invited you to join the organisation Acme  Bcc: x"));
    }

    #[test]
    fn smtp_urls() {
        let cases = [
            ("smtp://127.0.0.1:2525", Ok("smtp smtp://127.0.0.1:2525")),
            ("smtp://127.0.0.1:2525?tls=none", Ok("smtp smtp://127.0.0.1:2525")),
            (
                "smtp://user:p%40ss@mail.example:587?tls=required",
                Ok("smtp smtp://mail.example:587"),
            ),
            ("smtps://user:secret@mail.example", Ok("smtp smtps://mail.example")),
            ("smtp://mail.example?tls=opportunistic", Ok("smtp smtp://mail.example")),
            ("http://mail.example", Err(())),
            ("smtp://mail.example?tls=bogus", Err(())),
            ("not a url", Err(())),
        ];
        for (url, expected) in cases {
            let got = Mailer::smtp(url, DEFAULT_FROM);
            match (&got, expected) {
                (Ok(mailer), Ok(description)) => {
                    assert_eq!(mailer.describe(), description, "{url}");
                    let debug = format!("{mailer:?}");
                    assert!(!debug.contains("secret") && !debug.contains("p%40ss"), "{debug}");
                }
                (Err(MailError::InvalidSmtpUrl(reason)), Err(())) => {
                    assert!(!reason.contains("secret"), "{reason}");
                }
                _ => panic!("{url}: {got:?}"),
            }
        }
    }

    #[test]
    fn settings_choose_the_backend() {
        let dir = Path::new("/tmp/custard-data");
        let outbox = Mailer::from_settings(None, dir, DEFAULT_FROM).expect("outbox");
        assert_eq!(outbox.outbox_dir(), Some(dir.join("outbox").as_path()));
        let blank = Mailer::from_settings(Some("  "), dir, DEFAULT_FROM).expect("outbox");
        assert!(blank.outbox_dir().is_some());
        let smtp = Mailer::from_settings(Some("smtp://h:25"), dir, DEFAULT_FROM).expect("smtp");
        assert_eq!(smtp.outbox_dir(), None);
        assert!(matches!(Mailer::outbox(dir, "not an address"), Err(MailError::InvalidAddress(_))));
    }

    #[test]
    fn mailer_can_live_in_app_state() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Mailer>();
    }

    #[tokio::test]
    async fn smtp_delivers_through_a_real_exchange() {
        let sink = SmtpSink::start().await;
        let mailer = Mailer::smtp(&sink.url(), DEFAULT_FROM).expect("mailer");
        let token = crate::auth::new_secret();
        let message = verification_email(DEFAULT_PUBLIC_URL, "new.user@example.com", &token);
        // Spawned, as a handler would, which also proves the future is Send.
        let spawned = mailer.clone();
        tokio::spawn(async move { spawned.send(&message).await })
            .await
            .expect("joining")
            .expect("sending");
        let reset = password_reset_email(DEFAULT_PUBLIC_URL, "other@example.com", "t2");
        mailer.send(&reset).await.expect("sending");

        let received = sink.wait_for(2, Duration::from_secs(10)).await;
        let mail = &received[0];
        assert_eq!(mail.from, "no-reply@localhost");
        assert_eq!(mail.to, ["new.user@example.com"]);
        assert_eq!(
            mail.header("Subject").as_deref(),
            Some("Verify your email address for Custard")
        );
        assert_eq!(mail.header("To").as_deref(), Some("new.user@example.com"));
        let link = format!("{DEFAULT_PUBLIC_URL}/verify-email?token={token}");
        assert!(mail.data.contains(&link), "{}", mail.data);
        assert_eq!(received[1].to, ["other@example.com"]);
        assert_eq!(received[1].header("Subject").as_deref(), Some("Reset your Custard password"));
    }

    #[tokio::test]
    async fn smtp_authenticates_with_url_credentials_and_keeps_utf8() {
        let sink = SmtpSink::start().await;
        let url = sink.url().replace("smtp://", "smtp://mailer:s%40cret@");
        let mailer = Mailer::smtp(&url, "Custard <custard@example.com>").expect("mailer");
        let message =
            invitation_email(DEFAULT_PUBLIC_URL, "c@example.com", "tok", "Café Crème", "Zoë");
        mailer.send(&message).await.expect("sending");
        let received = sink.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(received[0].auth_user.as_deref(), Some("mailer"));
        assert!(received[0].data.contains("Zoë invited you to join the organisation Café Crème"));
        assert!(received[0].data.contains("/accept-invitation?token=tok"));
    }

    #[tokio::test]
    async fn smtp_failure_is_an_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
            listener.local_addr().expect("address").port()
        };
        let mailer =
            Mailer::smtp(&format!("smtp://127.0.0.1:{port}"), DEFAULT_FROM).expect("mailer");
        let message = verification_email(DEFAULT_PUBLIC_URL, "a@example.com", "t");
        assert!(matches!(mailer.send(&message).await, Err(MailError::Smtp(_))));
    }

    #[tokio::test]
    async fn outbox_writes_a_readable_eml_with_the_link() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mailer = Mailer::from_settings(None, data_dir.path(), DEFAULT_FROM).expect("mailer");
        let token = crate::auth::new_secret();
        let message = password_reset_email("http://localhost:9000", "someone@example.com", &token);
        mailer.send(&message).await.expect("writing");
        mailer.send(&message).await.expect("writing twice");

        let outbox = data_dir.path().join("outbox");
        let mut names: Vec<String> = std::fs::read_dir(&outbox)
            .expect("outbox exists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        for name in &names {
            assert!(name.ends_with(".eml") && !name.starts_with('.'), "{name}");
            let raw = std::fs::read_to_string(outbox.join(name)).expect("utf-8 eml");
            assert!(raw.contains("To: someone@example.com\r\n"), "{raw}");
            assert!(raw.contains("Subject: Reset your Custard password\r\n"), "{raw}");
            assert!(raw.contains(&format!("http://localhost:9000/reset-password?token={token}")));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(outbox.join(name)).expect("metadata").permissions();
                assert_eq!(mode.mode() & 0o777, 0o600);
            }
        }
        assert_ne!(names[0], names[1]);
    }

    #[tokio::test]
    async fn bad_recipient_is_refused_before_anything_is_written() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mailer = Mailer::from_settings(None, data_dir.path(), DEFAULT_FROM).expect("mailer");
        let message = verification_email(DEFAULT_PUBLIC_URL, "not an address", "t");
        assert!(matches!(mailer.send(&message).await, Err(MailError::InvalidAddress(_))));
        assert!(!data_dir.path().join("outbox").exists());
    }
}
