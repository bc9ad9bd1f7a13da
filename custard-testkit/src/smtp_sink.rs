//! A tiny SMTP server on 127.0.0.1 that records every message it receives, so
//! tests send mail through a real SMTP client (lettre) without a mail server.
//!
//! It speaks plain SMTP only (no TLS): greeting, EHLO/HELO, AUTH PLAIN/LOGIN
//! (any credentials are accepted and the user name recorded), MAIL FROM, RCPT
//! TO, DATA, RSET, NOOP and QUIT. It stops when dropped.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use custard_testkit::smtp_sink::SmtpSink;
//!
//! let sink = SmtpSink::start().await;
//! // Point the mailer at sink.url(), send, then:
//! let mails = sink.wait_for(1, Duration::from_secs(5)).await;
//! assert!(mails[0].data.contains("/verify-email?token="));
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long one client connection may stay open.
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);
/// The longest command or data line accepted, in bytes.
const MAX_LINE: u64 = 64 * 1024;
/// The largest message accepted, in bytes.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One message as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as sent after `DATA` (headers and body, CRLF line ends,
    /// dot-stuffing removed), decoded as UTF-8 with replacement characters.
    pub data: String,
    /// The user name of a successful `AUTH` on the connection, if any.
    pub auth_user: Option<String>,
}

impl ReceivedMail {
    /// The first header named `name` (case-insensitive), unfolded; encoded
    /// words (`=?utf-8?...`) are left as they are.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut lines = head.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            let Some((key, value)) = line.split_once(':') else { continue };
            if key.eq_ignore_ascii_case(name) {
                let mut value = value.trim().to_owned();
                // Folded headers continue on lines that start with whitespace.
                while let Some(next) = lines.next_if(|next| next.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(next.trim());
                }
                return Some(value);
            }
        }
        None
    }

    /// The text after the header block.
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }
}

/// A running sink; see the module docs.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    messages: watch::Receiver<Vec<ReceivedMail>>,
    server: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink on a free port of 127.0.0.1.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the smtp sink");
        let addr = listener.local_addr().expect("smtp sink address");
        let (sender, messages) = watch::channel(Vec::new());
        let server = tokio::spawn(async move {
            // Connections live in the set, so aborting this task ends them all.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let sender = sender.clone();
                        connections.spawn(async move {
                            let _ = tokio::time::timeout(CONNECTION_LIMIT, serve(stream, sender)).await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        SmtpSink { addr, messages, server }
    }

    /// The sink's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL for lettre's `AsyncSmtpTransport::from_url`: plain SMTP, no TLS.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.messages.borrow().clone()
    }

    /// Waits until at least `count` messages arrived and returns all of them;
    /// panics after `timeout` naming how many did arrive.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let mut messages = self.messages.clone();
        let waited = tokio::time::timeout(timeout, messages.wait_for(|m| m.len() >= count)).await;
        match waited {
            Ok(Ok(all)) => all.clone(),
            _ => panic!(
                "the smtp sink expected {count} message(s) within {timeout:?} but got {}",
                self.messages.borrow().len()
            ),
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The state of one SMTP conversation.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn serve(stream: TcpStream, sender: watch::Sender<Vec<ReceivedMail>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut envelope = Envelope::default();
    let mut auth_user = None;
    write.write_all(b"220 custard-smtp-sink ESMTP ready\r\n").await?;
    while let Some(line) = read_line(&mut reader).await? {
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        let reply: String = match verb.as_str() {
            "EHLO" => "250-custard-smtp-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                       250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760"
                .to_owned(),
            "HELO" => "250 custard-smtp-sink".to_owned(),
            "AUTH" => match authenticate(argument, &mut reader, &mut write).await? {
                Some(user) => {
                    auth_user = Some(user);
                    "235 2.7.0 authenticated".to_owned()
                }
                None => "501 5.5.4 malformed auth".to_owned(),
            },
            "MAIL" => match path_argument(argument, "FROM:") {
                Some(from) => {
                    envelope = Envelope { from: Some(from), to: Vec::new() };
                    "250 2.1.0 ok".to_owned()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>".to_owned(),
            },
            "RCPT" => match (&envelope.from, path_argument(argument, "TO:")) {
                (None, _) => "503 5.5.1 MAIL first".to_owned(),
                (Some(_), Some(to)) if !to.is_empty() => {
                    envelope.to.push(to);
                    "250 2.1.5 ok".to_owned()
                }
                _ => "501 5.5.4 syntax: RCPT TO:<address>".to_owned(),
            },
            "DATA" => {
                if envelope.from.is_none() || envelope.to.is_empty() {
                    "503 5.5.1 MAIL and RCPT first".to_owned()
                } else {
                    write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                    let Some(data) = read_data(&mut reader).await? else { return Ok(()) };
                    let done = std::mem::take(&mut envelope);
                    sender.send_modify(|all| {
                        all.push(ReceivedMail {
                            from: done.from.unwrap_or_default(),
                            to: done.to,
                            data,
                            auth_user: auth_user.clone(),
                        });
                    });
                    "250 2.0.0 ok: queued".to_owned()
                }
            }
            "RSET" => {
                envelope = Envelope::default();
                "250 2.0.0 ok".to_owned()
            }
            "NOOP" => "250 2.0.0 ok".to_owned(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 command not implemented".to_owned(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

/// One line without its line end; `None` at end of stream or for an overlong line.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *reader).take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if n == 0 || !buf.ends_with(b"\n") {
        return Ok(None);
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The message after `DATA` up to the lone `.`, with dot-stuffing removed.
async fn read_data<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<String>> {
    let mut data = String::new();
    while let Some(line) = read_line(reader).await? {
        if line == "." {
            return Ok(Some(data));
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
        data.push_str("\r\n");
        if data.len() > MAX_MESSAGE {
            return Ok(None);
        }
    }
    Ok(None)
}

/// The address in `FROM:<a@b> PARAMS` or `TO:<a@b>`.
fn path_argument(argument: &str, keyword: &str) -> Option<String> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// Runs AUTH PLAIN or AUTH LOGIN and returns the user name (any password is accepted).
async fn authenticate<R: AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin>(
    argument: &str,
    reader: &mut BufReader<R>,
    write: &mut W,
) -> std::io::Result<Option<String>> {
    let (mechanism, initial) = match argument.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_owned())),
        None => (argument.to_ascii_uppercase(), None),
    };
    let decode = |text: &str| {
        STANDARD.decode(text.trim()).ok().map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(i) => i,
                None => {
                    write.write_all(b"334 \r\n").await?;
                    read_line(reader).await?.unwrap_or_default()
                }
            };
            // authzid NUL authcid NUL password
            Ok(decode(&response).and_then(|s| s.split('\0').nth(1).map(str::to_owned)))
        }
        "LOGIN" => {
            let user = match initial {
                Some(i) => i,
                None => {
                    write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                    read_line(reader).await?.unwrap_or_default()
                }
            };
            write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let _password = read_line(reader).await?;
            Ok(decode(&user))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpStream;

    use super::*;

    /// A hand-written SMTP client: sends each line and returns the final reply line.
    struct Client {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        write: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Client {
        async fn connect(sink: &SmtpSink) -> (Client, String) {
            let (read, write) =
                TcpStream::connect(sink.addr()).await.expect("connect").into_split();
            let mut client = Client { reader: BufReader::new(read), write };
            let greeting = client.reply().await;
            (client, greeting)
        }

        async fn reply(&mut self) -> String {
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).await.expect("reply");
                // Multi-line replies use `250-`; the last line has a space after the code.
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    return line.trim_end().to_owned();
                }
            }
        }

        async fn send(&mut self, line: &str) -> String {
            self.write.write_all(format!("{line}\r\n").as_bytes()).await.expect("send");
            self.reply().await
        }
    }

    #[tokio::test]
    async fn records_a_conversation() {
        let sink = SmtpSink::start().await;
        assert!(sink.url().starts_with("smtp://127.0.0.1:"));
        let (mut c, greeting) = Client::connect(&sink).await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        let script = [
            ("EHLO test", "250 "),
            ("AUTH LOGIN", "334 "),
            ("dXNlcg==", "334 "),
            ("cGFzcw==", "235 "),
            ("NOOP", "250 "),
            ("RCPT TO:<early@example.com>", "503 "),
            ("MAIL FROM:<from@example.com> BODY=8BITMIME", "250 "),
            ("RCPT TO:<to1@example.com>", "250 "),
            ("rcpt to: <to2@example.com>", "250 "),
            ("DATA", "354 "),
            ("Subject: hello\r\nTo: to1@example.com\r\n\r\n..dot stuffed\r\nline two\r\n.", "250 "),
            ("MAIL FROM:<x@example.com>", "250 "),
            ("RSET", "250 "),
            ("DATA", "503 "),
            ("VRFY someone", "502 "),
            ("QUIT", "221 "),
        ];
        for (line, expected) in script {
            let reply = c.send(line).await;
            assert!(reply.starts_with(expected), "{line}: {reply}");
        }
        let mails = sink.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.from, "from@example.com");
        assert_eq!(mail.to, ["to1@example.com", "to2@example.com"]);
        assert_eq!(mail.auth_user.as_deref(), Some("user"));
        assert_eq!(mail.header("subject").as_deref(), Some("hello"));
        assert_eq!(mail.header("Cc"), None);
        assert_eq!(mail.body(), ".dot stuffed\r\nline two\r\n");
        assert_eq!(sink.messages(), mails);
    }

    #[tokio::test]
    async fn auth_plain_with_and_without_initial_response() {
        let sink = SmtpSink::start().await;
        // "\0alice\0secret" and "\0bob\0secret" in base64.
        for (lines, user) in [
            (vec![("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235 ")], "alice"),
            (vec![("AUTH PLAIN", "334"), ("AGJvYgBzZWNyZXQ=", "235 ")], "bob"),
        ] {
            let n = sink.messages().len() + 1;
            let (mut c, _) = Client::connect(&sink).await;
            c.send("HELO test").await;
            for (line, expected) in lines {
                let reply = c.send(line).await;
                assert!(reply.starts_with(expected), "{line}: {reply}");
            }
            for line in ["MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA", "x\r\n."] {
                c.send(line).await;
            }
            let mails = sink.wait_for(n, Duration::from_secs(5)).await;
            assert_eq!(mails[n - 1].auth_user.as_deref(), Some(user));
        }
    }

    #[tokio::test]
    #[should_panic(expected = "expected 1 message(s)")]
    async fn wait_for_gives_up() {
        let sink = SmtpSink::start().await;
        sink.wait_for(1, Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn stops_on_drop() {
        let sink = SmtpSink::start().await;
        let addr = sink.addr();
        let (mut c, _) = Client::connect(&sink).await;
        drop(sink);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The open connection is closed and no new one is accepted.
        let mut line = String::new();
        let n = c.reader.read_line(&mut line).await.unwrap_or(0);
        assert_eq!(n, 0, "{line}");
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
