//! The agent wire-protocol decoder: valid frames of every message type,
//! encoded and then mutated (wrong types, missing and unknown fields, huge
//! numbers, deep nesting, long strings, invalid UTF-8 made valid), plus
//! arbitrary text, decoded under the default and under tight size limits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use custard_core::wire::{
    Cancel, Columns, Discover, Done, ErrorReport, Flow, Frame, Hello, MAX_FRAME_BYTES, Message,
    More, Rows, Run, SchemaReport, Welcome, WireColumn, WireColumnMeta, WireError, WireForeignKey,
    WireLimits, WireSchema, WireTable,
};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use crate::mutate::{DocEdits, doc_edits, escape_bytes, json_value, wild_text};
use crate::runner::FuzzTarget;

/// Longest error message a decode may give, in characters: errors are echoed
/// to the peer, and the decoder cuts peer-supplied text to 200 characters.
const MAX_ERROR_CHARS: usize = 400;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9_.-]{0,12}", 2 => wild_text(24), 1 => any::<String>()]
}

fn list<T: fmt::Debug>(
    item: impl Strategy<Value = T>,
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(item, 0..max)
}

fn wire_schema() -> impl Strategy<Value = WireSchema> {
    let column =
        (text(), text(), any::<bool>(), option::of(text()), option::of(text()), list(text(), 3))
            .prop_map(|(name, data_type, nullable, default, comment, sample_values)| WireColumn {
                name,
                data_type,
                nullable,
                default,
                comment,
                sample_values,
            });
    let foreign_key = (list(text(), 3), text(), text(), list(text(), 3)).prop_map(
        |(columns, referenced_schema, referenced_table, referenced_columns)| WireForeignKey {
            columns,
            referenced_schema,
            referenced_table,
            referenced_columns,
        },
    );
    let kind = prop_oneof![
        select(&["table", "view", "materialized_view", "foreign_table"][..])
            .prop_map(str::to_owned),
        text()
    ];
    let table = (
        (text(), text(), kind, option::of(text())),
        (list(column, 4), list(text(), 2), list(foreign_key, 2), option::of(any::<i64>())),
    )
        .prop_map(
            |(
                (schema, name, kind, comment),
                (columns, primary_key, foreign_keys, row_estimate),
            )| {
                WireTable {
                    schema,
                    name,
                    kind,
                    comment,
                    columns,
                    primary_key,
                    foreign_keys,
                    row_estimate,
                }
            },
        );
    (dialect(), list(table, 4)).prop_map(|(dialect, tables)| WireSchema { dialect, tables })
}

fn dialect() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(&["postgres", "sqlite", "Postgres", "pg", "mysql", ""][..]).prop_map(str::to_owned),
        1 => text(),
    ]
}

/// A message of any type with arbitrary field values.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (text(), dialect(), list(text(), 4), option::of(text()), any::<u32>()).prop_map(
            |(agent_version, dialect, capabilities, schema_fingerprint, max_concurrency)| {
                Message::Hello(Hello {
                    agent_version,
                    dialect,
                    capabilities,
                    schema_fingerprint,
                    max_concurrency,
                })
            }
        ),
        (text(), wire_schema()).prop_map(|(fingerprint, schema)| Message::Schema(SchemaReport {
            fingerprint,
            schema
        })),
        list((text(), text()).prop_map(|(name, type_name)| WireColumnMeta { name, type_name }), 5)
            .prop_map(|columns| Message::Columns(Columns { columns })),
        list(list(json_value(), 5), 5).prop_map(|rows| Message::Rows(Rows { rows })),
        (any::<u64>(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
            |(row_count, truncated, elapsed_ms, bytes)| Message::Done(Done {
                row_count,
                truncated,
                elapsed_ms,
                bytes
            })
        ),
        (text(), text(), option::of(text())).prop_map(|(code, message, sqlstate)| Message::Error(
            ErrorReport { code: code.into(), message, sqlstate }
        )),
        Just(Message::Pong),
        (text(), any::<u64>(), any::<(u64, u64, u64, u32)>()).prop_map(
            |(
                connection_id,
                heartbeat_interval_ms,
                (max_rows, max_bytes, timeout_ms, max_concurrency),
            )| {
                Message::Welcome(Welcome {
                    connection_id,
                    heartbeat_interval_ms,
                    limits: WireLimits { max_rows, max_bytes, timeout_ms, max_concurrency },
                })
            }
        ),
        any::<u32>().prop_map(|sample_values| Message::Discover(Discover { sample_values })),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(sql, max_rows, timeout_ms)| Message::Run(
            Run { sql, max_rows, timeout_ms }
        )),
        text().prop_map(|target| Message::Cancel(Cancel { target })),
        any::<u32>().prop_map(|window| Message::Flow(Flow { window })),
        (text(), any::<u32>()).prop_map(|(target, frames)| Message::More(More { target, frames })),
        Just(Message::Ping),
    ]
}

/// The size limit a case decodes under.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// [`MAX_FRAME_BYTES`].
    Default,
    /// The text's own length plus this (so just over, at and under the limit).
    Relative(i64),
    /// A tiny limit.
    Small(usize),
}

/// How the text was made.
#[derive(Clone)]
enum Source {
    /// A valid frame, encoded, then edited.
    Frame(Box<Frame>, DocEdits),
    /// Any text at all.
    Arbitrary,
    /// Any bytes, made valid UTF-8 with replacement characters.
    Bytes,
    /// A valid frame padded with spaces to about [`MAX_FRAME_BYTES`].
    NearCap(Box<Frame>, i64),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Frame(frame, edits) => {
                f.debug_tuple("Frame").field(frame).field(edits).finish()
            }
            Source::Arbitrary => f.write_str("Arbitrary"),
            Source::Bytes => f.write_str("Bytes"),
            Source::NearCap(frame, offset) => {
                write!(f, "NearCap(MAX_FRAME_BYTES{offset:+}, {frame:?})")
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct WireCase {
    source: Source,
    limit: Limit,
    text: String,
}

impl fmt::Debug for WireCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireCase")
            .field("text", &Shown(&self.text))
            .field("bytes", &self.text.len())
            .field("limit", &self.limit)
            .field("source", &self.source)
            .finish()
    }
}

/// Long text shown as its start and end.
struct Shown<'a>(&'a str);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 4096 {
            return fmt::Debug::fmt(self.0, f);
        }
        let head: String = self.0.chars().take(1500).collect();
        let tail: String = {
            let chars: Vec<char> = self.0.chars().rev().take(500).collect();
            chars.into_iter().rev().collect()
        };
        write!(f, "{head:?} ... {tail:?}")
    }
}

fn limit() -> impl Strategy<Value = Limit> {
    prop_oneof![
        6 => Just(Limit::Default),
        2 => (-8i64..8).prop_map(Limit::Relative),
        1 => (0usize..64).prop_map(Limit::Small),
    ]
}

fn case() -> impl Strategy<Value = WireCase> {
    let frame = || (text(), message()).prop_map(|(id, m)| Box::new(Frame::new(id, m)));
    let edited = (frame(), doc_edits(1 << 20, 100_000)).prop_map(|(frame, edits)| {
        let doc = serde_json::from_str(&frame.encode()).unwrap_or_default();
        let bytes = edits.apply(doc);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (Source::Frame(frame, edits), text)
    });
    let arbitrary =
        prop_oneof![wild_text(200), any::<String>()].prop_map(|t| (Source::Arbitrary, t));
    let bytes = proptest::collection::vec(any::<u8>(), 0..200)
        .prop_map(|b| (Source::Bytes, String::from_utf8_lossy(&b).into_owned()));
    let near_cap = (frame(), -2i64..3).prop_map(|(frame, offset)| {
        let mut text = frame.encode();
        let target = (MAX_FRAME_BYTES as i64 + offset) as usize;
        if text.len() < target {
            text.push_str(&" ".repeat(target - text.len()));
        }
        (Source::NearCap(frame, offset), text)
    });
    (prop_oneof![40 => edited, 4 => arbitrary, 4 => bytes, 1 => near_cap], limit())
        .prop_map(|((source, text), limit)| WireCase { source, limit, text })
}

#[derive(Default)]
struct Counts {
    ok: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, u64>,
}

pub(crate) struct WireTarget {
    counts: RefCell<Counts>,
}

impl WireTarget {
    pub(crate) fn new() -> Self {
        WireTarget { counts: RefCell::default() }
    }
}

impl FuzzTarget for WireTarget {
    type Input = WireCase;

    fn strategy(&self) -> BoxedStrategy<WireCase> {
        case().boxed()
    }

    fn check(&self, input: &WireCase, count: bool) -> Result<(), String> {
        let text = input.text.as_str();
        let max = match input.limit {
            Limit::Default => MAX_FRAME_BYTES,
            Limit::Relative(d) => (text.len() as i64 + d).max(0) as usize,
            Limit::Small(n) => n,
        };
        let result = Frame::decode_with_limit(text, max);
        // Oversize input is refused unparsed, with its length; other input never is.
        match &result {
            Err(WireError::TooLarge { len, max: m })
                if text.len() <= max || *len != text.len() || *m != max =>
            {
                return Err(format!(
                    "TooLarge {{ len: {len}, max: {m} }} for {} bytes under a limit of {max}",
                    text.len()
                ));
            }
            Err(WireError::TooLarge { .. }) => {}
            _ if text.len() > max => {
                return Err(format!(
                    "{} bytes over a limit of {max} were parsed: {result:?}",
                    text.len()
                ));
            }
            _ => {}
        }
        let frame = match result {
            Err(e) => {
                let message = e.to_string();
                if message.chars().count() > MAX_ERROR_CHARS {
                    return Err(format!(
                        "a {}-character error message: {:.300}",
                        message.chars().count(),
                        message
                    ));
                }
                if e.code().is_empty() {
                    return Err(format!("an error without a code: {e}"));
                }
                if count {
                    *self.counts.borrow_mut().errors.entry(e.code()).or_default() += 1;
                }
                // An unedited valid frame must decode.
                if let Source::Frame(frame, edits) = &input.source
                    && edits.is_empty()
                    && text.len() <= max
                {
                    return Err(format!("a valid frame failed to decode ({e}): {frame:?}"));
                }
                return Ok(());
            }
            Ok(frame) => frame,
        };
        if count {
            *self.counts.borrow_mut().ok.entry(frame.message.type_name()).or_default() += 1;
        }
        // What decoded encodes, and decodes to the same frame.
        let encoded = frame.encode();
        match Frame::decode_with_limit(&encoded, usize::MAX) {
            Ok(again) if again == frame => {}
            Ok(again) => {
                return Err(format!(
                    "re-encoding changes the frame:\n  decoded   {frame:?}\n  re-decoded {again:?}\n  encoded   {}",
                    escape_bytes(encoded.as_bytes(), 2000)
                ));
            }
            Err(e) => return Err(format!("the re-encoded frame does not decode ({e}): {encoded}")),
        }
        if let Source::Frame(original, edits) = &input.source
            && edits.is_empty()
            && frame != **original
        {
            return Err(format!(
                "a valid frame decodes to another:\n  sent     {original:?}\n  received {frame:?}"
            ));
        }
        // What the server does next with a schema and a hello must not panic either.
        match &frame.message {
            Message::Schema(report) => {
                if let Ok(schema) = report.clone().into_schema() {
                    let back = SchemaReport::new(&schema).into_schema();
                    if back.as_ref() != Ok(&schema) {
                        return Err(format!("a schema does not survive a round trip: {back:?}"));
                    }
                }
            }
            Message::Hello(hello) => {
                let _ = hello.dialect();
            }
            _ => {}
        }
        Ok(())
    }

    fn size(&self, input: &WireCase) -> usize {
        input.text.len()
    }

    fn stats(&self) -> Vec<String> {
        let counts = self.counts.borrow();
        let show = |m: &BTreeMap<&str, u64>| {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        vec![format!("decoded: {}", show(&counts.ok)), format!("refused: {}", show(&counts.errors))]
    }
}
