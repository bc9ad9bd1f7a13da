//! The health file: what the running agent records about its session with the
//! server, and what `custard-agent health` makes of it.
//!
//! One line, `STATE AT [since=SECS] [reason=CODE]`: `STATE` is `connected` or
//! `disconnected`, `AT` the Unix time of the last write (refreshed every few
//! seconds while connected), `since` when the agent entered that state and
//! `reason` why it is disconnected. Older agents wrote only `STATE AT`, which
//! still reads; readers ignore fields they do not know.

use std::fmt;

/// A connected agent whose file is older than this is not responding.
pub const FRESH_SECS: u64 = 120;

/// Whether the agent is connected to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A session is up.
    Connected,
    /// No session.
    Disconnected,
}

/// Why the agent is disconnected (the `reason` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The server refused the API key (HTTP 401 or an `unauthorized` error).
    KeyRefused,
    /// The server refused the connection for another reason.
    Refused,
    /// The agent could not connect, or the server did not answer `hello`.
    Unreachable,
    /// A session ended.
    Lost,
    /// The agent stopped.
    Stopped,
    /// A code this build does not know (from a newer agent).
    Other(String),
}

impl Reason {
    /// The code written to the file.
    pub fn code(&self) -> &str {
        match self {
            Reason::KeyRefused => "key_refused",
            Reason::Refused => "refused",
            Reason::Unreachable => "unreachable",
            Reason::Lost => "lost",
            Reason::Stopped => "stopped",
            Reason::Other(code) => code,
        }
    }

    fn parse(code: &str) -> Reason {
        match code {
            "key_refused" => Reason::KeyRefused,
            "refused" => Reason::Refused,
            "unreachable" => Reason::Unreachable,
            "lost" => Reason::Lost,
            "stopped" => Reason::Stopped,
            other => Reason::Other(other.chars().filter(char::is_ascii_graphic).take(64).collect()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::KeyRefused => {
                "the server refused the API key (set CUSTARD_API_KEY to the connection's \
                 current key, then restart the agent)"
            }
            Reason::Refused => "the server refused the connection",
            Reason::Unreachable => "could not connect to the server",
            Reason::Lost => "the connection to the server was lost",
            Reason::Stopped => "the agent stopped",
            Reason::Other(code) => code,
        })
    }
}

/// One health record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Connected or not.
    pub link: Link,
    /// Unix time of the last write.
    pub at: u64,
    /// Unix time the agent entered this state (`at` in files without it).
    pub since: u64,
    /// Why it is disconnected, when known.
    pub reason: Option<Reason>,
}

impl Record {
    /// The line written to the file.
    pub fn encode(&self) -> String {
        let state = match self.link {
            Link::Connected => "connected",
            Link::Disconnected => "disconnected",
        };
        let mut line = format!("{state} {} since={}", self.at, self.since);
        if let Some(reason) = &self.reason {
            line.push_str(" reason=");
            line.push_str(reason.code());
        }
        line.push('\n');
        line
    }

    /// Reads a line written by this agent or an older one; `None` when it is
    /// not a health record.
    pub fn parse(text: &str) -> Option<Record> {
        let mut fields = text.split_whitespace();
        let link = match fields.next()? {
            "connected" => Link::Connected,
            "disconnected" => Link::Disconnected,
            _ => return None,
        };
        let at = fields.next()?.parse::<u64>().ok()?;
        let (mut since, mut reason) = (None, None);
        for field in fields {
            match field.split_once('=') {
                Some(("since", secs)) => since = secs.parse::<u64>().ok(),
                Some(("reason", code)) if !code.is_empty() => reason = Some(Reason::parse(code)),
                _ => {}
            }
        }
        Some(Record { link, at, since: since.unwrap_or(at), reason })
    }

    /// Whether the agent is connected and reported so recently (at `now`).
    pub fn healthy(&self, now: u64) -> bool {
        self.link == Link::Connected && now.saturating_sub(self.at) <= FRESH_SECS
    }

    /// What `custard-agent health` prints, at `now`.
    pub fn describe(&self, now: u64) -> String {
        match self.link {
            Link::Connected if self.healthy(now) => {
                format!("connected since {} ({})", utc(self.since), ago(self.since, now))
            }
            Link::Connected => format!(
                "not responding: the agent last reported being connected at {} ({}); is it \
                 still running?",
                utc(self.at),
                ago(self.at, now)
            ),
            Link::Disconnected => {
                let mut line =
                    format!("disconnected since {} ({})", utc(self.since), ago(self.since, now));
                if let Some(reason) = &self.reason {
                    line.push_str(": ");
                    line.push_str(&reason.to_string());
                }
                line
            }
        }
    }
}

/// A Unix time as `2026-12-04 23:41:05 UTC`.
pub fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| format!("@{secs}"), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// How long before `now` the time `then` was, in the largest whole unit.
pub fn ago(then: u64, now: u64) -> String {
    let Some(secs) = now.checked_sub(then) else {
        return "in the future: is the clock right?".to_owned();
    };
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3_600 => (secs / 60, "minute"),
        3_600..172_800 => (secs / 3_600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    match (n, unit) {
        (0, _) => "just now".to_owned(),
        (1, unit) => format!("1 {unit} ago"),
        (n, unit) => format!("{n} {unit}s ago"),
    }
}

/// The current Unix time.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_425_741; // 2026-12-04 23:09:01 UTC

    #[test]
    fn times_read_as_utc_and_relative() {
        let cases = [
            (0, "1970-01-01 00:00:00 UTC"),
            (1_796_425_265, "2026-12-04 23:01:05 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (u64::MAX, "@18446744073709551615"),
        ];
        for (secs, want) in cases {
            assert_eq!(utc(secs), want, "{secs}");
        }
        let ago_cases = [
            (0, "just now"),
            (1, "1 second ago"),
            (59, "59 seconds ago"),
            (60, "1 minute ago"),
            (476, "7 minutes ago"),
            (3_599, "59 minutes ago"),
            (3_600, "1 hour ago"),
            (172_799, "47 hours ago"),
            (172_800, "2 days ago"),
        ];
        for (secs, want) in ago_cases {
            assert_eq!(ago(NOW - secs, NOW), want, "{secs}");
        }
        assert_eq!(ago(NOW + 5, NOW), "in the future: is the clock right?");
    }

    #[test]
    fn records_parse_old_and_new_lines() {
        let rec = |link, at, since, reason: Option<Reason>| Record { link, at, since, reason };
        let cases: Vec<(&str, Option<Record>)> = vec![
            // Written by older agents: no since, no reason.
            ("connected 1796425741\n", Some(rec(Link::Connected, NOW, NOW, None))),
            ("disconnected 1796425741", Some(rec(Link::Disconnected, NOW, NOW, None))),
            (
                "connected 1796425741 since=1796425265\n",
                Some(rec(Link::Connected, NOW, 1_796_425_265, None)),
            ),
            (
                "disconnected 1796425741 since=1796425265 reason=key_refused\n",
                Some(rec(Link::Disconnected, NOW, 1_796_425_265, Some(Reason::KeyRefused))),
            ),
            // Fields a newer agent may add are skipped; unknown reasons kept as codes.
            (
                "disconnected 1796425741 reason=moon_phase since=1 extra=1 junk\n",
                Some(rec(Link::Disconnected, NOW, 1, Some(Reason::Other("moon_phase".into())))),
            ),
            ("disconnected 1796425741 since=x", Some(rec(Link::Disconnected, NOW, NOW, None))),
            ("", None),
            ("connected", None),
            ("connected soon", None),
            ("asleep 1796425741", None),
        ];
        for (text, want) in cases {
            assert_eq!(Record::parse(text), want, "{text:?}");
        }
        for reason in [
            None,
            Some(Reason::KeyRefused),
            Some(Reason::Refused),
            Some(Reason::Unreachable),
            Some(Reason::Lost),
            Some(Reason::Stopped),
        ] {
            let record = rec(Link::Disconnected, NOW, NOW - 9, reason);
            assert_eq!(Record::parse(&record.encode()), Some(record.clone()), "round trip");
        }
    }

    #[test]
    fn what_health_prints() {
        let rec = |link, at, since, reason: Option<Reason>| Record { link, at, since, reason };
        let cases = [
            (
                rec(Link::Connected, NOW - 3, NOW - 180, None),
                true,
                "connected since 2026-12-04 23:06:01 UTC (3 minutes ago)",
            ),
            (
                rec(Link::Connected, NOW - 300, NOW - 900, None),
                false,
                "not responding: the agent last reported being connected at 2026-12-04 \
                 23:04:01 UTC (5 minutes ago); is it still running?",
            ),
            (
                rec(Link::Disconnected, NOW, NOW - 476, Some(Reason::KeyRefused)),
                false,
                "disconnected since 2026-12-04 23:01:05 UTC (7 minutes ago): the server refused \
                 the API key (set CUSTARD_API_KEY to the connection's current key, then restart \
                 the agent)",
            ),
            (
                rec(Link::Disconnected, NOW, NOW, Some(Reason::Lost)),
                false,
                "disconnected since 2026-12-04 23:09:01 UTC (just now): the connection to the \
                 server was lost",
            ),
            (
                rec(Link::Disconnected, NOW, NOW - 7_200, None),
                false,
                "disconnected since 2026-12-04 21:09:01 UTC (2 hours ago)",
            ),
        ];
        for (record, healthy, want) in cases {
            assert_eq!(record.healthy(NOW), healthy, "{record:?}");
            assert_eq!(record.describe(NOW), want);
        }
    }
}
