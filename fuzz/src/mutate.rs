//! Mutations of JSON documents shared by the wire and API targets: edits of
//! the value tree (wrong types, missing and unknown fields), of its scalar
//! tokens in the text (huge numbers, broken escapes), and of raw bytes (deep
//! nesting, invalid UTF-8, truncation).

use std::fmt;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Map, Value, json};

/// Characters that matter to parsers and to Unicode handling, plus any.
pub(crate) fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        2 => any::<char>(),
        2 => select(vec![
            '\0', '\u{1}', '\n', '\t', '\r', '\u{7f}', '\'', '"', '`', '$', ';', '(', ')', '[', ']',
            '{', '}', '-', '/', '*', '\\', ':', '.', ',', '?', '@', '#', '\u{feff}', '\u{200b}',
            '\u{2028}', '\u{a0}', '\u{130}', '\u{17f}', '\u{df}', '\u{fb00}', '\u{212a}', '\u{3a3}',
            '\u{fffd}', '\u{10ffff}', '\u{e9}', '\u{1f600}', '\u{301}',
        ]),
    ]
}

/// Short text of interesting characters.
pub(crate) fn wild_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(interesting_char(), 0..max).prop_map(String::from_iter)
}

/// A JSON value of a few levels: every type, extreme numbers, odd strings.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        wild_text(16).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(wild_text(6), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value put where another was: usually of the wrong type.
#[derive(Clone, Debug)]
pub(crate) enum Wild {
    /// A generated value of any type.
    Value(Value),
    /// A string of this many bytes.
    LongString(usize),
    /// Arrays nested this deep.
    DeepArray(usize),
    /// Objects nested this deep.
    DeepObject(usize),
}

impl Wild {
    fn build(&self) -> Value {
        match self {
            Wild::Value(v) => v.clone(),
            Wild::LongString(n) => Value::from("y".repeat(*n)),
            Wild::DeepArray(depth) => {
                (0..*depth).fold(Value::from(1), |inner, _| Value::Array(vec![inner]))
            }
            Wild::DeepObject(depth) => {
                (0..*depth).fold(Value::from(1), |inner, _| json!({"a": inner}))
            }
        }
    }
}

fn wild(max_string: usize) -> impl Strategy<Value = Wild> {
    prop_oneof![
        8 => json_value().prop_map(Wild::Value),
        1 => (0..max_string).prop_map(Wild::LongString),
        // serde_json refuses more than 128 levels; stay near and past that.
        1 => (100usize..300).prop_map(Wild::DeepArray),
        1 => (100usize..300).prop_map(Wild::DeepObject),
    ]
}

/// One edit of the value tree.
#[derive(Clone, Debug)]
pub(crate) enum JsonEdit {
    /// Removes the chosen node (an object field or array element).
    Remove(Index),
    /// Replaces the chosen node.
    Set(Index, Wild),
    /// Adds a field to the chosen object (or to the top level).
    Add(Index, String, Wild),
    /// Turns the chosen string into a number or a number into a string.
    Flip(Index),
    /// Wraps the whole document in an array.
    WrapInArray,
}

pub(crate) fn json_edit(max_string: usize) -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => any::<Index>().prop_map(JsonEdit::Remove),
        4 => (any::<Index>(), wild(max_string)).prop_map(|(i, w)| JsonEdit::Set(i, w)),
        2 => (any::<Index>(), prop_oneof![wild_text(8), "[a-z_]{1,12}"], wild(max_string))
            .prop_map(|(i, k, w)| JsonEdit::Add(i, k, w)),
        2 => any::<Index>().prop_map(JsonEdit::Flip),
        1 => Just(JsonEdit::WrapInArray),
    ]
}

/// Paths (keys and array positions) of every node below the root, in pre-order.
fn paths(value: &Value) -> Vec<Vec<PathStep>> {
    fn walk(value: &Value, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(PathStep::Key(k.clone()));
                    out.push(path.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(PathStep::Pos(i));
                    out.push(path.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Pos(usize),
}

fn node_mut<'v>(mut value: &'v mut Value, path: &[PathStep]) -> Option<&'v mut Value> {
    for step in path {
        value = match (step, value) {
            (PathStep::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (PathStep::Pos(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

impl JsonEdit {
    pub(crate) fn apply(&self, doc: &mut Value) {
        let all = paths(doc);
        let pick = |i: &Index| (!all.is_empty()).then(|| all[i.index(all.len())].clone());
        match self {
            JsonEdit::Remove(i) => {
                let Some(mut path) = pick(i) else { return };
                let Some(last) = path.pop() else { return };
                match (node_mut(doc, &path), last) {
                    (Some(Value::Object(map)), PathStep::Key(k)) => {
                        map.remove(&k);
                    }
                    (Some(Value::Array(items)), PathStep::Pos(p)) if p < items.len() => {
                        items.remove(p);
                    }
                    _ => {}
                }
            }
            JsonEdit::Set(i, wild) => match pick(i) {
                Some(path) => {
                    if let Some(node) = node_mut(doc, &path) {
                        *node = wild.build();
                    }
                }
                None => *doc = wild.build(),
            },
            JsonEdit::Add(i, key, wild) => {
                let target = pick(i)
                    .and_then(|p| node_mut(doc, &p).filter(|n| n.is_object()).map(|_| p))
                    .unwrap_or_default();
                if let Some(Value::Object(map)) = node_mut(doc, &target) {
                    map.insert(key.clone(), wild.build());
                }
            }
            JsonEdit::Flip(i) => {
                let Some(path) = pick(i) else { return };
                if let Some(node) = node_mut(doc, &path) {
                    *node = match node.take() {
                        Value::String(s) => {
                            s.parse::<f64>().map_or(Value::from(s.len()), Value::from)
                        }
                        Value::Number(n) => Value::from(n.to_string()),
                        Value::Bool(b) => Value::from(u8::from(b)),
                        Value::Null => Value::from("null"),
                        Value::Array(a) => Value::Object(
                            a.into_iter()
                                .enumerate()
                                .map(|(i, v)| (i.to_string(), v))
                                .collect::<Map<_, _>>(),
                        ),
                        Value::Object(m) => Value::Array(m.into_iter().map(|(_, v)| v).collect()),
                    };
                }
            }
            JsonEdit::WrapInArray => *doc = Value::Array(vec![doc.take()]),
        }
    }
}

/// Raw JSON text put in place of a scalar token: what a `Value` cannot hold.
const RAW_SCALARS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "340282366920938463463374607431768211456",
    "1.0",
    "-0",
    "-0.0",
    "1E2",
    "0.1e1",
    "00",
    "01",
    "1.",
    ".5",
    "+1",
    "NaN",
    "Infinity",
    "0x10",
    "1_000",
    "true",
    "nul",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"\\u0000\"",
    "\"\\x41\"",
    "\"a\u{1}b\"",
    "\"unterminated",
    "\"\\\"",
    "\"\\u12\"",
    "[]",
    "{}",
    "[",
    "{",
    "\"\"",
    "1 2",
];

/// One edit of the JSON text: a scalar token replaced by raw text.
#[derive(Clone, Debug)]
pub(crate) struct ScalarEdit {
    nth: Index,
    raw: &'static str,
}

pub(crate) fn scalar_edit() -> impl Strategy<Value = ScalarEdit> {
    (any::<Index>(), select(RAW_SCALARS)).prop_map(|(nth, raw)| ScalarEdit { nth, raw })
}

impl ScalarEdit {
    pub(crate) fn apply(&self, text: &mut String) {
        let tokens = scalar_tokens(text);
        if tokens.is_empty() {
            return;
        }
        let (start, end) = tokens[self.nth.index(tokens.len())];
        text.replace_range(start..end, self.raw);
    }
}

/// Byte ranges of the scalar tokens (strings, numbers, literals) of JSON text.
fn scalar_tokens(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                tokens.push((start, i));
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                {
                    i += 1;
                }
                tokens.push((start, i));
            }
            _ => i += 1,
        }
    }
    tokens
}

/// One edit of the raw bytes.
#[derive(Clone)]
pub(crate) enum ByteEdit {
    /// Inserts bytes (often invalid UTF-8) at a position.
    Insert(Index, Vec<u8>),
    /// Deletes up to this many bytes at a position.
    Delete(Index, usize),
    /// Overwrites the byte at a position.
    Replace(Index, u8),
    /// Cuts the text at a position.
    Truncate(Index),
    /// Copies a span right after itself.
    Duplicate(Index, usize),
    /// Inserts an unclosed or closed run of `[` or `{"a":` this deep.
    Nest(Index, usize, bool, bool),
}

impl fmt::Debug for ByteEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteEdit::Insert(_, bytes) => write!(f, "Insert({})", escape_bytes(bytes, 64)),
            ByteEdit::Delete(_, n) => write!(f, "Delete({n})"),
            ByteEdit::Replace(_, b) => write!(f, "Replace({})", escape_bytes(&[*b], 4)),
            ByteEdit::Truncate(_) => write!(f, "Truncate"),
            ByteEdit::Duplicate(_, n) => write!(f, "Duplicate({n})"),
            ByteEdit::Nest(_, depth, objects, closed) => {
                write!(f, "Nest(depth {depth}, objects {objects}, closed {closed})")
            }
        }
    }
}

/// Bytes that matter to JSON, and any byte.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => select(b"{}[]\",:\\0123456789-+.eEtrufalsn \t\r\n\x00\x7f".to_vec()),
        1 => any::<u8>(),
        1 => 0x80u8..=0xff,
    ]
}

pub(crate) fn byte_edit(max_nesting: usize) -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), proptest::collection::vec(json_byte(), 1..8))
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        2 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        3 => (any::<Index>(), json_byte()).prop_map(|(i, b)| ByteEdit::Replace(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteEdit::Duplicate(i, n)),
        1 => (any::<Index>(), 1..max_nesting, any::<bool>(), any::<bool>())
            .prop_map(|(i, d, o, c)| ByteEdit::Nest(i, d, o, c)),
    ]
}

impl ByteEdit {
    pub(crate) fn apply(&self, bytes: &mut Vec<u8>) {
        let at = |i: &Index| i.index(bytes.len() + 1);
        match self {
            ByteEdit::Insert(i, new) => {
                let at = at(i);
                bytes.splice(at..at, new.iter().copied());
            }
            ByteEdit::Delete(i, n) => {
                let at = at(i);
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            ByteEdit::Replace(i, b) => {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
            }
            ByteEdit::Truncate(i) => {
                let at = at(i);
                bytes.truncate(at);
            }
            ByteEdit::Duplicate(i, n) => {
                let at = at(i);
                let end = (at + n).min(bytes.len());
                let span = bytes[at..end].to_vec();
                bytes.splice(end..end, span);
            }
            ByteEdit::Nest(i, depth, objects, closed) => {
                let at = at(i);
                let (open, close): (&[u8], &[u8]) =
                    if *objects { (b"{\"a\":", b"}") } else { (b"[", b"]") };
                let mut run = open.repeat(*depth);
                if *closed {
                    run.push(b'1');
                    run.extend(close.repeat(*depth));
                }
                bytes.splice(at..at, run);
            }
        }
    }
}

/// Bytes as text: printable ASCII as is, everything else escaped; cut after `max` bytes.
pub(crate) fn escape_bytes(bytes: &[u8], max: usize) -> String {
    let mut out = String::from("b\"");
    for chunk in bytes[..bytes.len().min(max)].utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&c.escape_default().to_string()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    if bytes.len() > max {
        out.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    out
}

/// A whole JSON document mutated at every level: tree edits, then scalar
/// tokens of the text, then raw bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct DocEdits {
    pub(crate) tree: Vec<JsonEdit>,
    pub(crate) scalars: Vec<ScalarEdit>,
    pub(crate) bytes: Vec<ByteEdit>,
}

pub(crate) fn doc_edits(max_string: usize, max_nesting: usize) -> impl Strategy<Value = DocEdits> {
    // Often no edit of a kind, so that many documents stay valid and reach the code behind the parser.
    (
        prop_oneof![
            2 => Just(Vec::new()),
            3 => proptest::collection::vec(json_edit(max_string), 1..4),
        ],
        prop_oneof![
            3 => Just(Vec::new()),
            2 => proptest::collection::vec(scalar_edit(), 1..3),
        ],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::collection::vec(byte_edit(max_nesting), 1..4),
        ],
    )
        .prop_map(|(tree, scalars, bytes)| DocEdits { tree, scalars, bytes })
}

impl DocEdits {
    pub(crate) fn is_empty(&self) -> bool {
        self.tree.is_empty() && self.scalars.is_empty() && self.bytes.is_empty()
    }

    /// The document with every edit applied, as bytes.
    pub(crate) fn apply(&self, mut doc: Value) -> Vec<u8> {
        for edit in &self.tree {
            edit.apply(&mut doc);
        }
        let mut text = doc.to_string();
        for edit in &self.scalars {
            edit.apply(&mut text);
        }
        let mut bytes = text.into_bytes();
        for edit in &self.bytes {
            edit.apply(&mut bytes);
        }
        bytes
    }
}
