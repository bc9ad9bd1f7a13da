//! The one vocabulary of error codes: every failure the core reports has a
//! stable snake_case code, the same over HTTP, in the wire's `error` frames,
//! in Python exceptions and in the web UI (`docs/errors.md` has the table).
//!
//! Each family of codes is one enum declared with [`codes!`], which writes its
//! `ALL`, `as_str` and `parse` from a single list, so a code cannot be missing
//! from any of them. [`Code`] gathers the families: what hosts map to their
//! own surfaces (the server's HTTP statuses, Python's exception classes).
//!
//! ```
//! use custard_core::{Code, ExecErrorCode};
//!
//! let code = Code::from(ExecErrorCode::Timeout);
//! assert_eq!(code.as_str(), "query_timeout");
//! assert_eq!(Code::parse("query_timeout"), Some(code));
//! assert!(Code::ALL.contains(&code));
//! ```

use std::fmt;

use crate::llm::LlmErrorCode;
use crate::wire::WireErrorCode;
use crate::{AskErrorCode, ExecErrorCode, RejectionCode};

/// Declares a closed set of error codes: the enum, with each variant's stable
/// name (and any older names `parse` still accepts), and from that one list
/// `ALL`, `as_str`, `parse` and `Display`.
///
/// ```text
/// codes! {
///     /// Why a thing failed.
///     pub enum ThingCode {
///         /// It was too big.
///         TooBig => "thing_too_big" | "too_big",
///     }
/// }
/// ```
macro_rules! codes {
    (
        $(#[doc = $enum_doc:literal])+
        $vis:vis enum $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $variant:ident => $code:literal $(| $alias:literal)*,
            )+
        }
    ) => {
        $(#[doc = $enum_doc])+
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl $name {
            /// Every code of the set, in the order of its declaration.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable snake_case name, the same over HTTP, on the wire and in Python.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }

            /// The code with this stable name (or an older name of it), if it is one.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($code $(| $alias)* => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use codes;

codes! {
    /// Arguments a host refuses before any work is done (the Python package's
    /// checks, the agent's `check-sql` input lines).
    pub enum InputErrorCode {
        /// An input that is not what the function takes (a `check-sql` line
        /// that is not a JSON object with a `sql` string, ...).
        InvalidInput => "invalid_input",
        /// A dialect Custard does not know.
        UnknownDialect => "unknown_dialect",
        /// Guard settings that do not make a guard (a malformed table name, ...).
        InvalidGuardConfig => "invalid_guard_config",
        /// Options that do not make an ask pipeline.
        InvalidOptions => "invalid_options",
        /// An API key or base URL given without a model name.
        MissingModel => "missing_model",
        /// A timeout that is not a positive, finite number of seconds.
        InvalidTimeout => "invalid_timeout",
    }
}

/// Declares [`Code`] over the families, with `ALL`, `as_str`, `parse`, and a
/// `From` for each family, from one list.
macro_rules! families {
    ($($(#[doc = $doc:literal])+ $family:ident($set:ty),)+) => {
        /// Every code a failure in the core is reported with, by family.
        ///
        /// Hosts map these to their surfaces: the server's table gives each an
        /// HTTP status and Python an exception class, and a test on each side
        /// checks that no code is left out.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[doc = $doc])+ $family($set),)+
        }

        impl Code {
            /// How many codes there are, in all families.
            const COUNT: usize = 0 $(+ <$set>::ALL.len())+;

            /// Every code of every family, family by family.
            pub const ALL: &'static [Code] = &{
                let mut all = [Code::Input(InputErrorCode::InvalidInput); Code::COUNT];
                let mut at = 0;
                $(
                    let mut i = 0;
                    while i < <$set>::ALL.len() {
                        all[at] = Code::$family(<$set>::ALL[i]);
                        at += 1;
                        i += 1;
                    }
                )+
                all
            };

            /// The stable snake_case name, the same over HTTP, on the wire and in Python.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$family(code) => code.as_str(),)+
                }
            }

            /// The code with this stable name (or an older name of it), if it is one.
            pub fn parse(name: &str) -> Option<Code> {
                $(
                    if let Some(code) = <$set>::parse(name) {
                        return Some(Code::$family(code));
                    }
                )+
                None
            }
        }

        $(
            impl From<$set> for Code {
                fn from(code: $set) -> Code {
                    Code::$family(code)
                }
            }
        )+
    };
}

families! {
    /// A host refused an argument.
    Input(InputErrorCode),
    /// The guard refused the SQL.
    Guard(RejectionCode),
    /// An executor (a database, or an agent standing for one) failed.
    Exec(ExecErrorCode),
    /// The language model gave no SQL.
    Llm(LlmErrorCode),
    /// A question got no answer.
    Ask(AskErrorCode),
    /// The wire protocol between agent and server refused a frame or a session.
    Wire(WireErrorCode),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// `parse(as_str(c)) == c` for every code of a family, and its `ALL` has
    /// each variant once.
    fn check_family<C: Copy + Eq + std::hash::Hash + fmt::Debug + Into<Code>>(
        all: &[C],
        as_str: fn(C) -> &'static str,
        parse: fn(&str) -> Option<C>,
    ) {
        assert!(!all.is_empty());
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len(), "{all:?}");
        for &code in all {
            assert_eq!(parse(as_str(code)), Some(code), "{code:?}");
            assert_eq!(Code::parse(as_str(code)), Some(code.into()), "{code:?}");
        }
    }

    #[test]
    fn every_code_round_trips_through_its_name() {
        check_family(InputErrorCode::ALL, InputErrorCode::as_str, InputErrorCode::parse);
        check_family(RejectionCode::ALL, RejectionCode::as_str, RejectionCode::parse);
        check_family(ExecErrorCode::ALL, ExecErrorCode::as_str, ExecErrorCode::parse);
        check_family(LlmErrorCode::ALL, LlmErrorCode::as_str, LlmErrorCode::parse);
        check_family(AskErrorCode::ALL, AskErrorCode::as_str, AskErrorCode::parse);
        check_family(WireErrorCode::ALL, WireErrorCode::as_str, WireErrorCode::parse);
        check_family(Code::ALL, Code::as_str, Code::parse);
        for &code in Code::ALL {
            assert_eq!(code.to_string(), code.as_str());
            assert_eq!(code, code.as_str());
        }
    }

    #[test]
    fn names_are_unique_snake_case_across_families() {
        let names: HashSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len(), "a name is used by two codes");
        let sizes = [
            InputErrorCode::ALL.len(),
            RejectionCode::ALL.len(),
            ExecErrorCode::ALL.len(),
            LlmErrorCode::ALL.len(),
            AskErrorCode::ALL.len(),
            WireErrorCode::ALL.len(),
        ];
        assert_eq!(Code::ALL.len(), sizes.iter().sum::<usize>());
        for name in names {
            let snake = name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(snake && !name.starts_with('_') && !name.ends_with('_'), "{name}");
        }
    }

    #[test]
    fn older_names_still_parse() {
        let cases = [
            ("busy", Code::Exec(ExecErrorCode::AgentBusy)),
            ("rejected", Code::Exec(ExecErrorCode::Rejected)),
        ];
        for (old, code) in cases {
            assert_eq!(Code::parse(old), Some(code), "{old}");
            assert_ne!(code.as_str(), old, "an older name is never written");
        }
        assert_eq!(Code::parse("no_such_code"), None);
        assert_eq!(Code::parse(""), None);
        assert_eq!(Code::parse("QUERY_TIMEOUT"), None);
    }
}
