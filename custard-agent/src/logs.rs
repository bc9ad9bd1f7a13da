//! Logging what a hostile server controls: its text is shown escaped and cut
//! (so it cannot forge log lines or hide in terminal escapes), and events it
//! can repeat at will are summarised at info level, with details at debug.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Characters of server-provided text kept in a log line.
const MAX_SHOWN_CHARS: usize = 200;

/// `text` from the server, safe for one log line: control and invisible
/// formatting characters (newlines, escapes, bidirectional overrides) are
/// written as escapes, and the text is cut to a few hundred characters.
pub(crate) fn untrusted(text: &str) -> String {
    let mut shown = String::with_capacity(text.len().min(MAX_SHOWN_CHARS + 3));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            shown.push_str("...");
            break;
        }
        if c.is_control() || is_invisible_format(c) {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Unicode format characters that change how a line reads without showing:
/// zero-width characters, bidirectional marks, embeddings, overrides and isolates.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Counts an event the server can repeat at will and says when to log a
/// summary: the first time, then at most once per `every`.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last_report: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    pub(crate) const fn new(every: Duration) -> Self {
        Throttle { every, state: Mutex::new(ThrottleState { last_report: None, unreported: 0 }) }
    }

    /// Counts one event; returns how many happened since the last report when
    /// it is time for another.
    pub(crate) fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.unreported += 1;
        let now = Instant::now();
        if state.last_report.is_some_and(|last| now.duration_since(last) < self.every) {
            return None;
        }
        state.last_report = Some(now);
        Some(std::mem::take(&mut state.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_forge_lines() {
        let forged = "401\n2099-01-01T00:00:00Z ERROR forged\r\x1b[2J\u{202E}gnp.exe";
        let shown = untrusted(forged);
        assert!(!shown.contains(['\n', '\r', '\x1b', '\u{202E}']), "{shown}");
        assert_eq!(shown, "401\\n2099-01-01T00:00:00Z ERROR forged\\r\\u{1b}[2J\\u{202e}gnp.exe");
        assert_eq!(untrusted("café ✓"), "café ✓", "printable text stays readable");
        let long = untrusted(&"x".repeat(10_000));
        assert_eq!(long.len(), MAX_SHOWN_CHARS + 3);
    }

    #[test]
    fn a_throttle_reports_the_first_event_then_counts() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.hit(), Some(1));
        for _ in 0..99 {
            assert_eq!(throttle.hit(), None);
        }
        let every_time = Throttle::new(Duration::ZERO);
        assert_eq!(every_time.hit(), Some(1));
        assert_eq!(every_time.hit(), Some(1));
    }
}
