//! One-time messages of the web pages, between a form's POST and the page it
//! redirects to (Post/Redirect/Get), kept on the server and bound to the
//! browser's session (signed out: to its CSRF nonce cookie). Only `web` uses
//! them; they live here, below the state that holds them, so the state need
//! not know the pages.
//!
//! A POST that must show something once, the API key of a new or rotated
//! connection, a question to ask again at once, the address an email went
//! to, puts it here under its [`Owner`] and the page it is for, then redirects
//! (303) to that page; the page's GET takes it out. So the secret is never in
//! a URL, the browser's history or a cookie, a reload of the page does not
//! show it again (nor re-submit the form), and another session never sees it.
//! Entries end after [`FLASH_TTL`] unread, and an owner holds at most one (a
//! newer replaces it).
//!
//! The entries live in this process's memory: with several replicas, a
//! session's requests must reach the same replica (or this moves into the
//! store, encrypted). After a restart an unread key is gone; rotate it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::store::SessionId;

/// How long an unread flash is kept.
pub(crate) const FLASH_TTL: Duration = Duration::from_secs(10 * 60);

/// At most this many unread flashes in all; the oldest go first beyond.
const MAX_FLASHES: usize = 10_000;

/// What a page shows once.
pub(crate) enum Flash {
    /// A connection's new API key (`web::connections`, which shows it with
    /// the setup lines).
    NewKey {
        /// The connection the key is for.
        connection_id: String,
        /// The key itself, shown once.
        api_key: String,
    },
    /// A new personal access token (`web::account`'s settings page).
    NewToken {
        /// The token's id.
        token_id: String,
        /// The token itself, shown once.
        secret: String,
    },
    /// Ask the history's question again at once (`web::history`).
    Rerun,
    /// The address an email was sent to (`web::account`: sign up, forgot password).
    SentTo(String),
}

/// Whose a flash is: a signed-in session, or a signed-out browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner(String);

impl Owner {
    /// A signed-in session.
    pub(crate) fn session(id: &SessionId) -> Self {
        Owner(format!("session:{}", id.as_str()))
    }

    /// A browser by its CSRF nonce cookie (every form post has one: the
    /// CSRF check needs it); `None` without the cookie.
    pub(crate) fn browser(headers: &HeaderMap) -> Option<Self> {
        crate::auth::cookie::cookie_value(headers, crate::auth::cookie::CSRF_COOKIE)
            .filter(|n| !n.is_empty())
            .map(|n| Owner(format!("browser:{n}")))
    }
}

// Keys and tokens are secrets: `Debug` (and so any log line) shows only the kind.
impl std::fmt::Debug for Flash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flash::NewKey { .. } => f.write_str("Flash::NewKey(..)"),
            Flash::NewToken { .. } => f.write_str("Flash::NewToken(..)"),
            Flash::Rerun => f.write_str("Flash::Rerun"),
            Flash::SentTo(_) => f.write_str("Flash::SentTo(..)"),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// The page it is for, e.g. `/connections/{id}`.
    target: String,
    at: Instant,
    flash: Flash,
}

/// The unread flashes by session.
#[derive(Debug, Default)]
pub(crate) struct Flashes {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Flashes {
    /// Keeps `flash` for `owner`'s next GET of `target` (replacing any unread one).
    pub(crate) fn put(&self, owner: &Owner, target: &str, flash: Flash) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.at) < FLASH_TTL);
        if entries.len() >= MAX_FLASHES
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(owner.0.clone(), Entry { target: target.to_owned(), at: now, flash });
    }

    /// The flash `owner` has for `target`, removed: shown once. A flash for
    /// another page stays until that page is shown or it expires.
    pub(crate) fn take(&self, owner: &Owner, target: &str) -> Option<Flash> {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.get(&owner.0)?;
        if entry.target != target {
            return None;
        }
        let entry = entries.remove(&owner.0)?;
        (entry.at.elapsed() < FLASH_TTL).then_some(entry.flash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flash_is_taken_once_by_its_session_and_page() {
        let flashes = Flashes::default();
        let a = Owner::session(&SessionId::from("a".to_owned()));
        let b = Owner::session(&SessionId::from("b".to_owned()));
        flashes.put(&a, "/x", Flash::Rerun);
        assert!(flashes.take(&b, "/x").is_none(), "another session");
        assert!(flashes.take(&a, "/y").is_none(), "another page");
        assert!(matches!(flashes.take(&a, "/x"), Some(Flash::Rerun)));
        assert!(flashes.take(&a, "/x").is_none(), "shown once");
    }
}
