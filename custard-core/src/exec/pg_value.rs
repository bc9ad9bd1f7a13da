//! PostgreSQL result values (binary format) -> JSON, as faithfully as JSON allows.
//!
//! tokio-postgres always asks for binary results, so each type's wire format is
//! decoded here by hand rather than through the driver's typed `FromSql` impls:
//! one wrapper accepts every type, so a result never fails just because a
//! column has an unusual type.
//!
//! What each type becomes:
//! - `bool` -> boolean; `int2`/`int4`/`int8`/`oid`/`xid`/`cid`/`xid8` -> number;
//!   the `reg*` types -> their OID as a number (the binary format carries no name).
//! - `float4`/`float8` -> number, except `"NaN"`, `"Infinity"`, `"-Infinity"`.
//! - `numeric` -> the exact decimal string PostgreSQL's `::text` prints.
//! - text-like types (`text`, `varchar`, `bpchar`, `name`, `"char"`, `xml`,
//!   `citext`, `jsonpath`, `ltree`, ...) and enum labels -> string.
//! - `json`/`jsonb` -> the parsed value. serde_json keeps no key order, keeps the
//!   last of duplicate keys and holds numbers beyond `i64`/`u64` as `f64`; a
//!   document it refuses (nested deeper than 128) stays a string.
//! - `uuid`, `inet`/`cidr`, `macaddr`/`macaddr8`, `bit`/`varbit`, `tid`, `pg_lsn`,
//!   `pg_snapshot`, geometric types, `tsvector` and ranges -> PostgreSQL's text form.
//! - dates and times -> ISO 8601 (`date`, `time`, `timetz`, `timestamp`,
//!   `timestamptz` in UTC with `Z`); BC years use astronomical numbering
//!   (1 BC is `0000`, 2 BC is `-0001`); infinities -> `"infinity"`/`"-infinity"`.
//! - `interval` -> ISO 8601 duration as PostgreSQL's `iso_8601` interval style.
//! - `money` -> decimal string assuming two fractional digits (the binary format
//!   is a count of the smallest unit, whatever `lc_monetary` says that is).
//! - `bytea` -> standard base64.
//! - arrays -> nested JSON arrays (lower bounds are dropped); composites -> objects
//!   by field name; anonymous records -> arrays; `hstore` -> object.
//! - anything else: the bytes as a string when they are UTF-8 without control
//!   characters (most extension types send text), otherwise base64. This covers
//!   `tsquery` and user-defined multiranges (the driver reports those as simple
//!   types, without their range type), which come out base64.

use std::error::Error;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use serde_json::{Map, Number, Value};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Kind, Type};

use super::{ExecError, ExecErrorCode};

/// Nesting (arrays in records in arrays ...) beyond this is refused, so hostile
/// bytes cannot exhaust the stack.
const MAX_DEPTH: usize = 64;
/// PostgreSQL's own limit on array dimensions (`MAXDIM`).
const MAX_ARRAY_DIMS: usize = 6;
/// Julian day number of 2000-01-01, PostgreSQL's epoch for dates and times.
const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;
const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

/// Decodes every column of `row` into JSON; SQL NULL becomes `null`.
pub(crate) fn row_values(row: &Row) -> Result<Vec<Value>, ExecError> {
    (0..row.len()).map(|idx| column_value(row, idx)).collect()
}

/// The PostgreSQL name of a type, with arrays written `int4[]` rather than `_int4`.
pub(crate) fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(elem) if ty.name().starts_with('_') => format!("{}[]", type_name(elem)),
        _ => ty.name().to_owned(),
    }
}

/// Decodes one column, naming the column and its type when that fails.
fn column_value(row: &Row, idx: usize) -> Result<Value, ExecError> {
    match row.try_get::<_, Option<PgValue>>(idx) {
        Ok(value) => Ok(value.map_or(Value::Null, |v| v.0)),
        Err(e) => {
            let column = &row.columns()[idx];
            // The driver's own message only gives the column index; the cause is ours.
            let cause = e.source().map_or_else(|| e.to_string(), ToString::to_string);
            Err(ExecError::new(
                ExecErrorCode::Internal,
                format!(
                    "cannot decode column `{}` of type {}: {cause}",
                    column.name(),
                    type_name(column.type_())
                ),
            ))
        }
    }
}

/// A non-NULL PostgreSQL value of any type, decoded into JSON.
#[derive(Debug, Clone, PartialEq)]
struct PgValue(Value);

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(PgValue(decode(ty, raw, 0)?))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Why bytes could not be decoded as the type the server said they were.
#[derive(Debug)]
struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for DecodeError {}

type Decoded<T> = Result<T, DecodeError>;

/// Shorthand for a failed decode.
fn invalid<T>(message: impl Into<String>) -> Decoded<T> {
    Err(DecodeError(message.into()))
}

/// A cursor over a value's bytes whose reads fail instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.buf.len() {
            return invalid(format!(
                "value too short: needs {n} more bytes, has {}",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Decoded<i16> {
        self.array().map(i16::from_be_bytes)
    }

    fn u16(&mut self) -> Decoded<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn i32(&mut self) -> Decoded<i32> {
        self.array().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Decoded<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Decoded<i64> {
        self.array().map(i64::from_be_bytes)
    }

    fn u64(&mut self) -> Decoded<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn f64(&mut self) -> Decoded<f64> {
        self.array().map(f64::from_be_bytes)
    }

    /// A non-negative count or length.
    fn count(&mut self) -> Decoded<usize> {
        let n = self.i32()?;
        usize::try_from(n).or_else(|_| invalid(format!("negative count {n}")))
    }

    /// A length-prefixed item, `None` for length -1 (SQL NULL).
    fn item(&mut self) -> Decoded<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Ok(None),
            n => {
                let len =
                    usize::try_from(n).or_else(|_| invalid(format!("negative length {n}")))?;
                self.take(len).map(Some)
            }
        }
    }

    /// Everything not read yet.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails when bytes are left over, which means the format was misread.
    fn finish(&self) -> Decoded<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            invalid(format!("{} unexpected trailing bytes", self.buf.len()))
        }
    }
}

/// Decodes a value of type `ty`; `depth` counts the containers around it.
fn decode(ty: &Type, raw: &[u8], depth: usize) -> Decoded<Value> {
    if depth > MAX_DEPTH {
        return invalid(format!("values nested more than {MAX_DEPTH} levels deep"));
    }
    match ty.kind() {
        Kind::Array(elem) => decode_array(Some(elem), raw, depth),
        Kind::Enum(_) => utf8(raw).map(Value::String),
        Kind::Domain(base) => decode(base, raw, depth + 1),
        Kind::Range(subtype) => range_text(subtype, raw, depth).map(Value::String),
        Kind::Multirange(subtype) => multirange_text(subtype, raw, depth).map(Value::String),
        Kind::Composite(fields) => decode_composite(fields, raw, depth),
        _ => decode_scalar(ty, raw, depth),
    }
}

/// Decodes a built-in scalar type, then well-known extension types by name.
fn decode_scalar(ty: &Type, raw: &[u8], depth: usize) -> Decoded<Value> {
    let text = |s: String| Ok(Value::String(s));
    match *ty {
        Type::BOOL => exact(raw, |r| r.u8().map(|b| Value::Bool(b != 0))),
        Type::INT2 => exact(raw, |r| r.i16().map(Value::from)),
        Type::INT4 => exact(raw, |r| r.i32().map(Value::from)),
        Type::INT8 => exact(raw, |r| r.i64().map(Value::from)),
        Type::XID8 => exact(raw, |r| r.u64().map(Value::from)),
        Type::OID
        | Type::XID
        | Type::CID
        | Type::REGPROC
        | Type::REGPROCEDURE
        | Type::REGOPER
        | Type::REGOPERATOR
        | Type::REGCLASS
        | Type::REGTYPE
        | Type::REGCONFIG
        | Type::REGDICTIONARY
        | Type::REGNAMESPACE
        | Type::REGROLE
        | Type::REGCOLLATION => exact(raw, |r| r.u32().map(Value::from)),
        Type::FLOAT4 => exact(raw, |r| r.array().map(|b| float4_json(f32::from_be_bytes(b)))),
        Type::FLOAT8 => exact(raw, |r| r.f64().map(float8_json)),
        Type::NUMERIC => text(numeric_text(raw)?),
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::XML
        | Type::REFCURSOR
        | Type::CSTRING
        | Type::PG_NODE_TREE => text(utf8(raw)?),
        Type::CHAR => text(char_text(raw)?),
        Type::JSON => Ok(json(utf8(raw)?)),
        Type::JSONB => Ok(json(versioned_text(raw)?)),
        Type::JSONPATH => text(versioned_text(raw)?),
        Type::UUID => text(uuid_text(raw)?),
        Type::DATE => text(exact(raw, |r| r.i32().and_then(date_text))?),
        Type::TIME => text(exact(raw, |r| r.i64().and_then(time_text))?),
        Type::TIMETZ => text(exact(raw, timetz_text)?),
        Type::TIMESTAMP => text(exact(raw, |r| r.i64().and_then(|t| timestamp_text(t, "")))?),
        Type::TIMESTAMPTZ => text(exact(raw, |r| r.i64().and_then(|t| timestamp_text(t, "Z")))?),
        Type::INTERVAL => text(exact(raw, interval_text)?),
        Type::BYTEA => text(base64::engine::general_purpose::STANDARD.encode(raw)),
        Type::INET | Type::CIDR => text(inet_text(raw)?),
        Type::MACADDR | Type::MACADDR8 => text(macaddr_text(ty, raw)?),
        Type::MONEY => text(exact(raw, |r| r.i64().map(money_text))?),
        Type::BIT | Type::VARBIT => text(bits_text(raw)?),
        Type::TID => text(exact(raw, |r| Ok(format!("({},{})", r.u32()?, r.u16()?)))?),
        Type::PG_LSN => {
            text(exact(raw, |r| r.u64().map(|l| format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)))?)
        }
        Type::TXID_SNAPSHOT | Type::PG_SNAPSHOT => text(exact(raw, snapshot_text)?),
        Type::POINT
        | Type::LSEG
        | Type::BOX
        | Type::PATH
        | Type::POLYGON
        | Type::LINE
        | Type::CIRCLE => text(exact(raw, |r| geometry_text(ty, r))?),
        Type::TS_VECTOR => text(exact(raw, tsvector_text)?),
        Type::RECORD => decode_record(raw, depth),
        // Arrays whose element type only the value's header names (`pg_stats` uses `anyarray`).
        Type::RECORD_ARRAY | Type::ANYARRAY | Type::ANYCOMPATIBLEARRAY => {
            decode_array(None, raw, depth)
        }
        Type::VOID => Ok(Value::Null),
        _ => decode_extension(ty, raw),
    }
}

/// Extension types are known only by name; the rest falls back to text or base64.
fn decode_extension(ty: &Type, raw: &[u8]) -> Decoded<Value> {
    match ty.name() {
        "citext" => utf8(raw).map(Value::String),
        "ltree" | "lquery" | "ltxtquery" => versioned_text(raw).map(Value::String),
        "hstore" => hstore(raw),
        _ => Ok(fallback(raw)),
    }
}

/// Unknown types: text when the bytes look like text, base64 otherwise.
fn fallback(raw: &[u8]) -> Value {
    match std::str::from_utf8(raw) {
        // Control characters mean a binary format that merely happens to be valid UTF-8.
        Ok(s) if !s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) => {
            Value::String(s.to_owned())
        }
        _ => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
    }
}

/// Runs `read` over the whole of `raw`, failing if it leaves bytes unread.
fn exact<T>(raw: &[u8], read: impl FnOnce(&mut Reader<'_>) -> Decoded<T>) -> Decoded<T> {
    let mut reader = Reader::new(raw);
    let value = read(&mut reader)?;
    reader.finish()?;
    Ok(value)
}

/// Bytes that must be UTF-8 text (the connection's client encoding is UTF8).
fn utf8(raw: &[u8]) -> Decoded<String> {
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => invalid(format!("text is not UTF-8: {e}")),
    }
}

/// Text behind a format version byte, as `jsonb`, `jsonpath` and `ltree` send it.
fn versioned_text(raw: &[u8]) -> Decoded<String> {
    match raw.split_first() {
        Some((1, text)) => utf8(text),
        Some((version, _)) => invalid(format!("unsupported format version {version}")),
        None => invalid("empty value"),
    }
}

/// Parses JSON text; what serde_json refuses stays the original text.
fn json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// `"char"`: one byte, printed like PostgreSQL's `charout` (octal escape above ASCII).
fn char_text(raw: &[u8]) -> Decoded<String> {
    match raw {
        [] | [0] => Ok(String::new()),
        [b] if b.is_ascii() => Ok(char::from(*b).to_string()),
        [b] => Ok(format!("\\{b:03o}")),
        _ => invalid(format!("\"char\" value of {} bytes", raw.len())),
    }
}

/// A float4 as a JSON number with its shortest decimal form (0.1, not 0.10000000149).
fn float4_json(f: f32) -> Value {
    match format!("{f:e}").parse::<f64>() {
        Ok(wide) if f.is_finite() => float8_json(wide),
        _ => float8_json(f64::from(f)),
    }
}

/// A float8 as a JSON number, or PostgreSQL's spelling of the non-finite values.
fn float8_json(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None => Value::String(non_finite_text(f).to_owned()),
    }
}

/// PostgreSQL's spelling of NaN and the infinities.
fn non_finite_text(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// `numeric`: base-10000 digits printed exactly as PostgreSQL's `numeric_out` does.
fn numeric_text(raw: &[u8]) -> Decoded<String> {
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const POSITIVE_INFINITY: u16 = 0xD000;
    const NEGATIVE_INFINITY: u16 = 0xF000;
    exact(raw, |r| {
        let ndigits =
            usize::try_from(r.i16()?).or_else(|_| invalid("negative numeric digit count"))?;
        let weight = i64::from(r.i16()?);
        let sign = r.u16()?;
        let dscale = r.u16()?;
        let digits = (0..ndigits).map(|_| r.i16()).collect::<Decoded<Vec<i16>>>()?;
        match sign {
            NAN => return Ok("NaN".to_owned()),
            POSITIVE_INFINITY => return Ok("Infinity".to_owned()),
            NEGATIVE_INFINITY => return Ok("-Infinity".to_owned()),
            0 | NEGATIVE => {}
            other => return invalid(format!("invalid numeric sign {other:#06x}")),
        }
        if dscale > 0x3FFF {
            return invalid(format!("invalid numeric scale {dscale}"));
        }
        if let Some(d) = digits.iter().find(|d| !(0..10_000).contains(*d)) {
            return invalid(format!("invalid numeric digit {d}"));
        }
        Ok(numeric_digits_text(sign == NEGATIVE, weight, usize::from(dscale), &digits))
    })
}

/// Prints validated numeric digits: `weight` is the power of 10000 of `digits[0]`.
fn numeric_digits_text(negative: bool, weight: i64, dscale: usize, digits: &[i16]) -> String {
    // Digit `i` has power `weight - i`; positions outside `digits` are zeros.
    let digit_at =
        |i: i64| usize::try_from(i).ok().and_then(|i| digits.get(i)).copied().unwrap_or(0);
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        let _ = write!(out, "{}", digit_at(0));
        for i in 1..=weight {
            let _ = write!(out, "{:04}", digit_at(i));
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < dscale {
            let _ = write!(out, "{:04}", digit_at(i));
            i += 1;
        }
        out.truncate(start + dscale);
    }
    out
}

/// `uuid`: lowercase and hyphenated.
fn uuid_text(raw: &[u8]) -> Decoded<String> {
    let bytes: [u8; 16] = exact(raw, |r| r.array())?;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

/// A day count from 2000-01-01 as `(year, month, day)`, year 0 being 1 BC.
fn civil_date(days: i64) -> Decoded<(i64, i64, i64)> {
    // PostgreSQL's j2date, in i64 so no input can overflow.
    let julian_day = days + POSTGRES_EPOCH_JDATE;
    if julian_day < 0 {
        return invalid(format!("date out of range: {days} days from 2000-01-01"));
    }
    let mut julian = julian_day + 32_044;
    let mut quad = julian / 146_097;
    let extra = (julian - quad * 146_097) * 4 + 3;
    julian += 60 + quad * 3 + extra / 146_097;
    quad = julian / 1461;
    julian -= quad * 1461;
    let mut y = julian * 4 / 1461;
    julian = if y != 0 { (julian + 305) % 365 } else { (julian + 306) % 366 } + 123;
    y += quad * 4;
    quad = julian * 2141 / 65_536;
    let day = julian - 7834 * quad / 256;
    let month = (quad + 10) % 12 + 1;
    Ok((y - 4800, month, day))
}

/// `YYYY-MM-DD` for a day count from 2000-01-01.
fn ymd_text(days: i64) -> Decoded<String> {
    let (year, month, day) = civil_date(days)?;
    let year = if year < 0 { format!("-{:04}", -year) } else { format!("{year:04}") };
    Ok(format!("{year}-{month:02}-{day:02}"))
}

/// `date`: days from 2000-01-01, with the extreme values meaning the infinities.
fn date_text(days: i32) -> Decoded<String> {
    match days {
        i32::MAX => Ok("infinity".to_owned()),
        i32::MIN => Ok("-infinity".to_owned()),
        _ => ymd_text(i64::from(days)),
    }
}

/// `HH:MM:SS` plus the fraction without trailing zeros, for microseconds of a day.
fn clock_text(micros: i64) -> String {
    let mut out = format!(
        "{:02}:{:02}:{:02}",
        micros / USECS_PER_HOUR,
        micros % USECS_PER_HOUR / USECS_PER_MINUTE,
        micros % USECS_PER_MINUTE / USECS_PER_SEC
    );
    push_fraction(&mut out, micros % USECS_PER_SEC);
    out
}

/// Appends `.ffffff` without trailing zeros when `micros` (0..1_000_000) is nonzero.
fn push_fraction(out: &mut String, micros: i64) {
    if micros != 0 {
        let digits = format!("{micros:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// `time`: microseconds since midnight (24:00:00 included, as PostgreSQL allows).
fn time_text(micros: i64) -> Decoded<String> {
    if !(0..=USECS_PER_DAY).contains(&micros) {
        return invalid(format!("time out of range: {micros} microseconds"));
    }
    Ok(clock_text(micros))
}

/// `timetz`: a time and the zone in seconds *west* of UTC, printed as `+HH:MM`.
fn timetz_text(r: &mut Reader<'_>) -> Decoded<String> {
    let mut out = time_text(r.i64()?)?;
    let east = -i64::from(r.i32()?);
    let abs = east.abs();
    let sign = if east < 0 { '-' } else { '+' };
    let _ = write!(out, "{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60);
    if abs % 60 != 0 {
        let _ = write!(out, ":{:02}", abs % 60);
    }
    Ok(out)
}

/// `timestamp`/`timestamptz`: microseconds from 2000-01-01 00:00, then `suffix`.
fn timestamp_text(micros: i64, suffix: &str) -> Decoded<String> {
    match micros {
        i64::MAX => Ok("infinity".to_owned()),
        i64::MIN => Ok("-infinity".to_owned()),
        _ => {
            let date = ymd_text(micros.div_euclid(USECS_PER_DAY))?;
            Ok(format!("{date}T{}{suffix}", clock_text(micros.rem_euclid(USECS_PER_DAY))))
        }
    }
}

/// `interval` in ISO 8601, part for part as PostgreSQL's `iso_8601` style prints it.
fn interval_text(r: &mut Reader<'_>) -> Decoded<String> {
    let micros = r.i64()?;
    let days = r.i32()?;
    let months = r.i32()?;
    // PostgreSQL 17 spells infinite intervals with every field at its extreme.
    if (micros, days, months) == (i64::MAX, i32::MAX, i32::MAX) {
        return Ok("infinity".to_owned());
    }
    if (micros, days, months) == (i64::MIN, i32::MIN, i32::MIN) {
        return Ok("-infinity".to_owned());
    }
    if (micros, days, months) == (0, 0, 0) {
        return Ok("PT0S".to_owned());
    }
    // Truncating division, like C, so every part carries the sign of its field.
    let (hours, rest) = (micros / USECS_PER_HOUR, micros % USECS_PER_HOUR);
    let (minutes, rest) = (rest / USECS_PER_MINUTE, rest % USECS_PER_MINUTE);
    let (seconds, fraction) = (rest / USECS_PER_SEC, rest % USECS_PER_SEC);
    let mut out = String::from("P");
    push_part(&mut out, i64::from(months / 12), 'Y');
    push_part(&mut out, i64::from(months % 12), 'M');
    push_part(&mut out, i64::from(days), 'D');
    if micros != 0 {
        out.push('T');
    }
    push_part(&mut out, hours, 'H');
    push_part(&mut out, minutes, 'M');
    if seconds != 0 || fraction != 0 {
        if seconds < 0 || fraction < 0 {
            out.push('-');
        }
        let _ = write!(out, "{}", seconds.abs());
        push_fraction(&mut out, fraction.abs());
        out.push('S');
    }
    Ok(out)
}

/// Appends `{value}{unit}` unless `value` is zero.
fn push_part(out: &mut String, value: i64, unit: char) {
    if value != 0 {
        let _ = write!(out, "{value}{unit}");
    }
}

/// `money`: a signed count of cents as `-12.34`.
fn money_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// `inet`/`cidr`: address, and `/bits` for `cidr` or a partial `inet` prefix.
fn inet_text(raw: &[u8]) -> Decoded<String> {
    // PostgreSQL's own family codes, not the operating system's.
    const PGSQL_AF_INET: u8 = 2;
    const PGSQL_AF_INET6: u8 = 3;
    exact(raw, |r| {
        let [family, bits, is_cidr, len] = r.array()?;
        let address = r.take(usize::from(len))?;
        let (text, full) = match (family, address) {
            (PGSQL_AF_INET, [a, b, c, d]) => (format!("{a}.{b}.{c}.{d}"), 32),
            (PGSQL_AF_INET6, _) => match <[u8; 16]>::try_from(address) {
                Ok(bytes) => (ipv6_text(&bytes), 128),
                Err(_) => return invalid(format!("IPv6 address of {len} bytes")),
            },
            _ => return invalid(format!("address family {family} with {len} bytes")),
        };
        if bits > full {
            return invalid(format!("prefix length {bits} exceeds {full}"));
        }
        Ok(if is_cidr != 0 || bits != full { format!("{text}/{bits}") } else { text })
    })
}

/// IPv6 text as PostgreSQL prints it: the first longest run of two or more zero
/// groups becomes `::`, and IPv4-compatible or -mapped addresses end in dotted quad.
fn ipv6_text(bytes: &[u8; 16]) -> String {
    let words: Vec<u16> = bytes.chunks_exact(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect();
    let best = longest_zero_run(&words).filter(|&(_, len)| len >= 2);
    let mut out = String::new();
    let mut i = 0;
    while i < words.len() {
        if let Some((base, len)) = best
            && (base..base + len).contains(&i)
        {
            if i == base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        let embeds_ipv4 = best
            .is_some_and(|(base, len)| base == 0 && (len == 6 || (len == 5 && words[5] == 0xFFFF)));
        if i == 6 && embeds_ipv4 {
            let _ = write!(out, "{}.{}.{}.{}", bytes[12], bytes[13], bytes[14], bytes[15]);
            break;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    if best.is_some_and(|(base, len)| base + len == words.len()) {
        out.push(':');
    }
    out
}

/// `(start, length)` of the first longest run of zero words.
fn longest_zero_run(words: &[u16]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut start = None;
    for (i, &w) in words.iter().chain(std::iter::once(&1)).enumerate() {
        match (w, start) {
            (0, None) => start = Some(i),
            (0, Some(_)) => {}
            (_, Some(s)) => {
                if best.is_none_or(|(_, len)| i - s > len) {
                    best = Some((s, i - s));
                }
                start = None;
            }
            (_, None) => {}
        }
    }
    best
}

/// `macaddr` (6 bytes) or `macaddr8` (8 bytes) as colon-separated lowercase hex.
fn macaddr_text(ty: &Type, raw: &[u8]) -> Decoded<String> {
    let expected = if *ty == Type::MACADDR { 6 } else { 8 };
    if raw.len() != expected {
        return invalid(format!("{} value of {} bytes", ty.name(), raw.len()));
    }
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// `bit`/`varbit`: a bit count, then the bits packed most significant first.
fn bits_text(raw: &[u8]) -> Decoded<String> {
    exact(raw, |r| {
        let len = r.count()?;
        let bytes = r.take(len.div_ceil(8))?;
        Ok((0..len)
            .map(|i| if bytes[i / 8] & (0x80 >> (i % 8)) != 0 { '1' } else { '0' })
            .collect())
    })
}

/// `pg_snapshot`/`txid_snapshot` as `xmin:xmax:xip,xip`.
fn snapshot_text(r: &mut Reader<'_>) -> Decoded<String> {
    let count = r.count()?;
    let (xmin, xmax) = (r.u64()?, r.u64()?);
    let in_progress =
        (0..count).map(|_| r.u64().map(|x| x.to_string())).collect::<Decoded<Vec<_>>>()?;
    Ok(format!("{xmin}:{xmax}:{}", in_progress.join(",")))
}

/// The geometric types in PostgreSQL's text form.
fn geometry_text(ty: &Type, r: &mut Reader<'_>) -> Decoded<String> {
    let text = match *ty {
        Type::POINT => point_text(r)?,
        Type::LSEG => format!("[{},{}]", point_text(r)?, point_text(r)?),
        Type::BOX => format!("{},{}", point_text(r)?, point_text(r)?),
        Type::LINE => format!(
            "{{{},{},{}}}",
            float_text(r.f64()?),
            float_text(r.f64()?),
            float_text(r.f64()?)
        ),
        Type::CIRCLE => format!("<{},{}>", point_text(r)?, float_text(r.f64()?)),
        Type::PATH => {
            let closed = r.u8()? != 0;
            let points = points_text(r)?;
            if closed { format!("({points})") } else { format!("[{points}]") }
        }
        _ => format!("({})", points_text(r)?),
    };
    Ok(text)
}

/// A point as `(x,y)`.
fn point_text(r: &mut Reader<'_>) -> Decoded<String> {
    Ok(format!("({},{})", float_text(r.f64()?), float_text(r.f64()?)))
}

/// A counted list of points, comma-separated.
fn points_text(r: &mut Reader<'_>) -> Decoded<String> {
    let count = r.count()?;
    if count > r.remaining() / 16 {
        return invalid(format!("{count} points in {} bytes", r.remaining()));
    }
    Ok((0..count).map(|_| point_text(r)).collect::<Decoded<Vec<_>>>()?.join(","))
}

/// A float8 as PostgreSQL's `float8out` prints it: shortest digits, exponent
/// form (`1e+20`, `1.5e-05`) below 1e-4 and from 1e15.
fn float_text(f: f64) -> String {
    if !f.is_finite() {
        return non_finite_text(f).to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. `-1.5e-5`.
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else { return f.to_string() };
    let Ok(exponent) = exponent.parse::<i64>() else { return f.to_string() };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..15).contains(&exponent) {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs());
    }
    let point = usize::try_from(exponent + 1).unwrap_or(0);
    if exponent < 0 {
        let zeros = "0".repeat(usize::try_from(-exponent - 1).unwrap_or(0));
        format!("{sign}0.{zeros}{digits}")
    } else if digits.len() <= point {
        format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

/// `tsvector` in PostgreSQL's text form: `'lexeme':1A,2 'other'`.
fn tsvector_text(r: &mut Reader<'_>) -> Decoded<String> {
    let count = r.count()?;
    let mut out = String::new();
    for n in 0..count {
        let rest = r.rest();
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return invalid("tsvector lexeme without terminator");
        };
        let lexeme = utf8(&rest[..end])?;
        *r = Reader::new(&rest[end + 1..]);
        if n > 0 {
            out.push(' ');
        }
        let _ = write!(out, "'{}'", lexeme.replace('\'', "''").replace('\\', "\\\\"));
        let positions = r.u16()?;
        for p in 0..positions {
            let entry = r.u16()?;
            out.push(if p == 0 { ':' } else { ',' });
            let weight = match entry >> 14 {
                3 => "A",
                2 => "B",
                1 => "C",
                _ => "",
            };
            let _ = write!(out, "{}{weight}", entry & 0x3FFF);
        }
    }
    Ok(out)
}

/// `hstore`: a count, then length-prefixed keys and nullable values.
fn hstore(raw: &[u8]) -> Decoded<Value> {
    exact(raw, |r| {
        let count = r.count()?;
        let mut object = Map::new();
        for _ in 0..count {
            let Some(key) = r.item()? else { return invalid("hstore key is null") };
            let value = r.item()?.map(utf8).transpose()?.map_or(Value::Null, Value::String);
            object.insert(utf8(key)?, value);
        }
        Ok(Value::Object(object))
    })
}

/// Arrays of any dimension as nested JSON arrays, elements decoded recursively
/// as `elem`, or as the type the array's header names when `elem` is `None`.
fn decode_array(elem: Option<&Type>, raw: &[u8], depth: usize) -> Decoded<Value> {
    exact(raw, |r| {
        let ndim = r.count()?;
        if ndim > MAX_ARRAY_DIMS {
            return invalid(format!("array of {ndim} dimensions"));
        }
        let _has_nulls = r.i32()?;
        let element_oid = r.u32()?;
        let elem = elem.cloned().unwrap_or_else(|| type_for_oid(element_oid));
        let mut dims = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            dims.push(r.count()?);
            let _lower_bound = r.i32()?;
        }
        let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let total = match total {
            _ if ndim == 0 => 0,
            Some(t) if t <= r.remaining() / 4 => t,
            _ => return invalid(format!("array dimensions {dims:?} exceed the data")),
        };
        let mut flat = Vec::with_capacity(total);
        for _ in 0..total {
            flat.push(match r.item()? {
                Some(bytes) => decode(&elem, bytes, depth + 1)?,
                None => Value::Null,
            });
        }
        Ok(nest(&dims, flat))
    })
}

/// Folds a flat row-major element list into nested arrays of the given dimensions.
fn nest(dims: &[usize], flat: Vec<Value>) -> Value {
    let mut level = flat;
    for &width in dims.iter().skip(1).rev() {
        if width == 0 {
            return Value::Array(Vec::new());
        }
        let mut items = level.into_iter();
        let mut grouped = Vec::new();
        loop {
            let chunk: Vec<Value> = items.by_ref().take(width).collect();
            if chunk.is_empty() {
                break;
            }
            grouped.push(Value::Array(chunk));
        }
        level = grouped;
    }
    Value::Array(level)
}

/// Composite values: an object keyed by the type's field names.
fn decode_composite(
    fields: &[tokio_postgres::types::Field],
    raw: &[u8],
    depth: usize,
) -> Decoded<Value> {
    exact(raw, |r| {
        let count = r.count()?;
        if count != fields.len() {
            return invalid(format!("record of {count} fields for a type of {}", fields.len()));
        }
        let mut object = Map::new();
        for field in fields {
            let _oid = r.u32()?;
            let value = match r.item()? {
                Some(bytes) => decode(field.type_(), bytes, depth + 1)?,
                None => Value::Null,
            };
            object.insert(field.name().to_owned(), value);
        }
        Ok(Value::Object(object))
    })
}

/// Anonymous records (`ROW(...)`): an array, each field decoded by its OID.
fn decode_record(raw: &[u8], depth: usize) -> Decoded<Value> {
    exact(raw, |r| {
        let count = r.count()?;
        if count > r.remaining() / 8 {
            return invalid(format!("record of {count} fields in {} bytes", r.remaining()));
        }
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let oid = r.u32()?;
            let ty = type_for_oid(oid);
            values.push(match r.item()? {
                Some(bytes) => decode(&ty, bytes, depth + 1)?,
                None => Value::Null,
            });
        }
        Ok(Value::Array(values))
    })
}

/// The built-in type with this OID; any other type gets the text-or-base64 fallback.
fn type_for_oid(oid: u32) -> Type {
    Type::from_oid(oid)
        .unwrap_or_else(|| Type::new(format!("oid {oid}"), oid, Kind::Simple, String::new()))
}

/// A range in PostgreSQL's text form, bounds formatted by this module's rules.
fn range_text(subtype: &Type, raw: &[u8], depth: usize) -> Decoded<String> {
    const EMPTY: u8 = 0x01;
    const LOWER_INCLUSIVE: u8 = 0x02;
    const UPPER_INCLUSIVE: u8 = 0x04;
    const LOWER_UNBOUNDED: u8 = 0x08;
    const UPPER_UNBOUNDED: u8 = 0x10;
    exact(raw, |r| {
        let flags = r.u8()?;
        if flags & EMPTY != 0 {
            return Ok("empty".to_owned());
        }
        let mut out = String::from(if flags & LOWER_INCLUSIVE != 0 { "[" } else { "(" });
        if flags & LOWER_UNBOUNDED == 0 {
            out.push_str(&range_bound(subtype, r, depth)?);
        }
        out.push(',');
        if flags & UPPER_UNBOUNDED == 0 {
            out.push_str(&range_bound(subtype, r, depth)?);
        }
        out.push(if flags & UPPER_INCLUSIVE != 0 { ']' } else { ')' });
        Ok(out)
    })
}

/// One range bound, double-quoted when PostgreSQL's `range_out` would quote it.
fn range_bound(subtype: &Type, r: &mut Reader<'_>, depth: usize) -> Decoded<String> {
    let Some(bytes) = r.item()? else { return invalid("range bound is null") };
    let text = match decode(subtype, bytes, depth + 1)? {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let needs_quotes = text.is_empty()
        || text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '(' | ')' | '[' | ']' | ',') || is_c_space(c));
    if !needs_quotes {
        return Ok(text);
    }
    let escaped = text.replace('\\', "\\\\").replace('"', "\"\"");
    Ok(format!("\"{escaped}\""))
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r')
}

/// A multirange (of ranges over `subtype`) as `{range,range}`.
fn multirange_text(subtype: &Type, raw: &[u8], depth: usize) -> Decoded<String> {
    exact(raw, |r| {
        let count = r.count()?;
        if count > r.remaining() / 4 {
            return invalid(format!("multirange of {count} ranges in {} bytes", r.remaining()));
        }
        let mut ranges = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(bytes) = r.item()? else { return invalid("multirange element is null") };
            ranges.push(range_text(subtype, bytes, depth + 1)?);
        }
        Ok(format!("{{{}}}", ranges.join(",")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::Client;

    /// A client whose session prints `::text` the way the expectations assume.
    async fn client() -> Client {
        let client = custard_testkit::connect(&custard_testkit::test_database_url()).await;
        prepare_session(&client).await;
        client
    }

    async fn prepare_session(client: &Client) {
        client
            .batch_execute(
                "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'iso_8601'",
            )
            .await
            .expect("session settings");
    }

    /// Every column of every row of `sql`, decoded.
    async fn decode_rows(client: &Client, sql: &str) -> Vec<Vec<Value>> {
        let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter().map(|row| row_values(row).unwrap_or_else(|e| panic!("{sql}: {e}"))).collect()
    }

    /// Decodes `SELECT {expr}` and compares it with the JSON text `expected`.
    async fn check(client: &Client, expr: &str, expected: &str) -> Result<(), String> {
        let expected: Value = serde_json::from_str(expected).expect("expected is JSON");
        let actual = decode_rows(client, &format!("SELECT {expr}")).await.remove(0).remove(0);
        if actual == expected {
            Ok(())
        } else {
            Err(format!("{expr}: got {actual}, want {expected}"))
        }
    }

    /// Runs a table of `check` cases and reports every failure at once.
    async fn check_all(client: &Client, cases: &[(&str, &str)]) {
        let mut failures = Vec::new();
        for (expr, expected) in cases {
            if let Err(e) = check(client, expr, expected).await {
                failures.push(e);
            }
        }
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    }

    /// Runs `sql`, whose rows are `(value, text)`, and compares the decoded value
    /// with `expected(text)`; returns how many rows were compared.
    async fn check_against_text(
        client: &Client,
        sql: &str,
        expected: impl Fn(&str) -> String,
    ) -> usize {
        let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut failures = Vec::new();
        for row in &rows {
            let text: String = row.get(1);
            let want = Value::String(expected(&text));
            let got = row_values(row).map(|mut v| v.remove(0));
            if got.as_ref() != Ok(&want) {
                failures.push(format!("{text}: got {got:?}, want {want}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} differ:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
        rows.len()
    }

    /// Decodes each expression and compares it with PostgreSQL's own `::text`.
    async fn check_same_as_text(client: &Client, exprs: &[&str]) {
        let mut failures = Vec::new();
        for expr in exprs {
            // `format('%s')` uses the type's output function; `::text` of `inet` differs.
            let sql = format!("SELECT ({expr}), format('%s', {expr})");
            let row = client.query_one(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            let want = Value::String(row.get(1));
            match row_values(&row) {
                Ok(got) if got[0] == want => {}
                got => failures.push(format!("{expr}: got {got:?}, want {want}")),
            }
        }
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    }

    #[tokio::test]
    async fn scalars() {
        let client = client().await;
        check_all(
            &client,
            &[
                ("true", "true"),
                ("false", "false"),
                ("(-32768)::int2", "-32768"),
                ("2147483647", "2147483647"),
                ("'-9223372036854775808'::int8", "-9223372036854775808"),
                ("4294967295::oid", "4294967295"),
                ("'42'::xid", "42"),
                ("'18446744073709551615'::xid8", "18446744073709551615"),
                ("'7'::cid", "7"),
                ("'pg_class'::regclass", "1259"),
                ("'int4'::regtype", "23"),
                ("0.1::float4", "0.1"),
                ("3.4028235e38::float4", "3.4028235e38"),
                ("'NaN'::float4", r#""NaN""#),
                ("'-Infinity'::float4", r#""-Infinity""#),
                ("0.1::float8", "0.1"),
                ("1e308::float8", "1e308"),
                ("-2.5e-300::float8", "-2.5e-300"),
                ("'Infinity'::float8", r#""Infinity""#),
                ("'NaN'::float8", r#""NaN""#),
                ("1.50::numeric", r#""1.50""#),
                ("0.000::numeric", r#""0.000""#),
                ("0::numeric", r#""0""#),
                ("(-12.5)::numeric", r#""-12.5""#),
                ("0.0001::numeric", r#""0.0001""#),
                ("10000::numeric", r#""10000""#),
                ("1e-20::numeric", r#""0.00000000000000000001""#),
                ("repeat('9', 120)::numeric", &format!("\"{}\"", "9".repeat(120))),
                ("'NaN'::numeric", r#""NaN""#),
                ("'Infinity'::numeric", r#""Infinity""#),
                ("'-Infinity'::numeric", r#""-Infinity""#),
                ("'héllo'::text", r#""héllo""#),
                ("'a'::varchar(5)", r#""a""#),
                ("'ab'::char(4)", r#""ab  ""#),
                ("'x'::name", r#""x""#),
                ("'a'::\"char\"", r#""a""#),
                ("''::\"char\"", r#""""#),
                (r#"'\200'::"char""#, r#""\\200""#),
                ("'lit'::unknown", r#""lit""#),
                ("'<a>1</a>'::xml", r#""<a>1</a>""#),
                (r#"'{"b":[1,2.5,null,"x"],"a":{}}'::json"#, r#"{"a":{},"b":[1,2.5,null,"x"]}"#),
                (
                    r#"'{"b":[1,2.5,null,"x"],"a":true}'::jsonb"#,
                    r#"{"a":true,"b":[1,2.5,null,"x"]}"#,
                ),
                (r#"'"s"'::jsonb"#, r#""s""#),
                ("'null'::jsonb", "null"),
                (r#"'$.a[*] ? (@ > 1)'::jsonpath"#, r#""$.\"a\"[*]?(@ > 1)""#),
                (
                    "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
                    r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#,
                ),
                ("'2024-02-29'::date", r#""2024-02-29""#),
                ("'infinity'::date", r#""infinity""#),
                ("'-infinity'::date", r#""-infinity""#),
                ("'0044-03-15 BC'::date", r#""-0043-03-15""#),
                ("'0001-12-31 BC'::date", r#""0000-12-31""#),
                ("'4713-11-24 BC'::date", r#""-4712-11-24""#),
                ("'5874897-12-31'::date", r#""5874897-12-31""#),
                ("'13:45:06'::time", r#""13:45:06""#),
                ("'13:45:06.5'::time", r#""13:45:06.5""#),
                ("'00:00:00.000001'::time", r#""00:00:00.000001""#),
                ("'24:00:00'::time", r#""24:00:00""#),
                ("'13:45:06.25+05:30'::timetz", r#""13:45:06.25+05:30""#),
                ("'01:00:00-08'::timetz", r#""01:00:00-08:00""#),
                ("'01:00:00+00'::timetz", r#""01:00:00+00:00""#),
                ("'2024-01-02 03:04:05.678'::timestamp", r#""2024-01-02T03:04:05.678""#),
                ("'1999-12-31 23:59:59.999999'::timestamp", r#""1999-12-31T23:59:59.999999""#),
                ("'0001-01-01 00:00:00 BC'::timestamp", r#""0000-01-01T00:00:00""#),
                ("'294276-12-31 23:59:59.999999'::timestamp", r#""294276-12-31T23:59:59.999999""#),
                ("'infinity'::timestamp", r#""infinity""#),
                ("'-infinity'::timestamp", r#""-infinity""#),
                ("'2024-01-02 03:04:05+02'::timestamptz", r#""2024-01-02T01:04:05Z""#),
                ("'infinity'::timestamptz", r#""infinity""#),
                ("'1 year 2 months 3 days 04:05:06.5'::interval", r#""P1Y2M3DT4H5M6.5S""#),
                ("'0'::interval", r#""PT0S""#),
                ("'-1.5 seconds'::interval", r#""PT-1.5S""#),
                ("'1 mon -1 day'::interval", r#""P1M-1D""#),
                ("'\\x00ff10'::bytea", r#""AP8Q""#),
                ("''::bytea", r#""""#),
                ("'192.168.0.1'::inet", r#""192.168.0.1""#),
                ("'192.168.0.1/24'::inet", r#""192.168.0.1/24""#),
                ("'10.0.0.0/8'::cidr", r#""10.0.0.0/8""#),
                ("'10.1.2.3/32'::cidr", r#""10.1.2.3/32""#),
                ("'2001:DB8::1'::inet", r#""2001:db8::1""#),
                ("'2001:db8::/32'::cidr", r#""2001:db8::/32""#),
                ("'08:00:2B:01:02:03'::macaddr", r#""08:00:2b:01:02:03""#),
                ("'08:00:2b:01:02:03:04:05'::macaddr8", r#""08:00:2b:01:02:03:04:05""#),
                ("12.34::money", r#""12.34""#),
                ("(-0.05)::money", r#""-0.05""#),
                ("'-92233720368547758.08'::money", r#""-92233720368547758.08""#),
                ("B'101'::bit(3)", r#""101""#),
                ("B'1010101011'::varbit", r#""1010101011""#),
                ("B''::varbit", r#""""#),
                ("'(1,2)'::tid", r#""(1,2)""#),
                ("'16/B374D848'::pg_lsn", r#""16/B374D848""#),
                (
                    "tsrange('2020-01-01', '2020-01-02 12:00')",
                    r#""[2020-01-01T00:00:00,2020-01-02T12:00:00)""#,
                ),
                ("ROW(1, 'a', NULL::int, ROW(2.50))", r#"[1, "a", null, ["2.50"]]"#),
                ("pg_sleep(0)", "null"),
                ("'1 2'::int2vector", "[1, 2]"),
                ("'23 25'::oidvector", "[23, 25]"),
                ("NULL::int", "null"),
                ("NULL::text", "null"),
                ("NULL::int[]", "null"),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn arrays() {
        let client = client().await;
        check_all(
            &client,
            &[
                ("ARRAY[1, 2, 3]", "[1, 2, 3]"),
                ("ARRAY[1, NULL, 3]", "[1, null, 3]"),
                ("'{}'::int[]", "[]"),
                ("ARRAY[[1, 2], [3, 4], [5, 6]]", "[[1, 2], [3, 4], [5, 6]]"),
                ("'{{{1,2},{3,4}},{{5,6},{7,8}}}'::int[]", "[[[1, 2], [3, 4]], [[5, 6], [7, 8]]]"),
                ("ARRAY[[NULL, 'x'], ['y', NULL]]::text[]", r#"[[null, "x"], ["y", null]]"#),
                ("'[0:1]={7,8}'::int[]", "[7, 8]"),
                (r#"ARRAY['a', 'b"c', '']"#, r#"["a", "b\"c", ""]"#),
                ("ARRAY[1.50, 2]::numeric[]", r#"["1.50", "2"]"#),
                ("ARRAY['2024-01-01'::date, 'infinity']", r#"["2024-01-01", "infinity"]"#),
                (r#"ARRAY['{"a":1}'::jsonb, NULL]"#, r#"[{"a": 1}, null]"#),
                ("ARRAY[int4range(1, 2), 'empty']", r#"["[1,2)", "empty"]"#),
                ("ARRAY[ARRAY[ROW(1, 'x')]]", r#"[[[1, "x"]]]"#),
                ("ARRAY['\\x01'::bytea]", r#"["AQ=="]"#),
                ("ARRAY[[1.5::float8, 'NaN']]", r#"[[1.5, "NaN"]]"#),
                ("array_fill(0, ARRAY[2, 3, 1])", "[[[0], [0], [0]], [[0], [0], [0]]]"),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn text_forms_match_postgres() {
        let client = client().await;
        check_same_as_text(
            &client,
            &[
                "'0.0.0.0'::inet",
                "'255.255.255.255/0'::inet",
                "'10.1.0.0/16'::cidr",
                "'::'::inet",
                "'::1'::inet",
                "'1::'::inet",
                "'1::1'::inet",
                "'1:0:0:1::1'::inet",
                "'1:0:0:2:0:0:0:3'::inet",
                "'1:0:1:0:1:0:1:0'::inet",
                "'0:0:0:0:0:1:0:0'::inet",
                "'1:2:3:4:5:6:7:8'::inet",
                "'::ffff:1.2.3.4'::inet",
                "'::1.2.3.4'::inet",
                "'::0.0.0.1'::inet",
                "'::1.2.3.4/120'::inet",
                "'::ffff:0:0/96'::cidr",
                "'fe80::1/64'::inet",
                "'2001:db8::/32'::cidr",
                "'0::ffff:1:2:3:4'::inet",
                "point(1.5, -2)",
                "'(1e20,1e-5)'::point",
                "'(123456789012345,0.0001)'::point",
                "'(1234567890123456,0.00001)'::point",
                "'(-0,0.1)'::point",
                "'(NaN,Infinity)'::point",
                "'[(0,0),(1,1)]'::lseg",
                "'(3,4),(1,2)'::box",
                "'[(0,0),(1,1),(2,0)]'::path",
                "'((0,0),(1,1),(2,0))'::path",
                "'((0,0),(1,1),(2,0))'::polygon",
                "'{1,-1,0.5}'::line",
                "'<(1,2),3.25>'::circle",
                "'a fat cat:3A sat:1B,4C,5'::tsvector",
                "$$'it''s' 'back\\\\slash' 'x y'$$::tsvector",
                "to_tsvector('english', 'The quick brown foxes jumped')",
                "''::tsvector",
                "int4range(1, 10)",
                "int4range(NULL, 3)",
                "int4range(5, NULL)",
                "'empty'::int4range",
                "int8range(-5, 5, '[]')",
                "numrange(1.50, 2.5, '(]')",
                "numrange(NULL, NULL)",
                "daterange('2024-01-01', '2024-02-01')",
                "int4multirange(int4range(1, 3), int4range(5, 7))",
                "'{}'::int4multirange",
                "'10:20:10,14,15'::pg_snapshot",
                "'10:20:'::txid_snapshot",
                "'$.a[*] ? (@ > 1 && @ like_regex \"^x\")'::jsonpath",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn numeric_matches_postgres_text() {
        let client = client().await;
        let sql = "SELECT x, x::text FROM generate_series(-300, 300, 7) AS g, LATERAL (VALUES
            (g::numeric * 12345.6789 / 7),
            (g::numeric ^ 7),
            (round(g::numeric / 1000, abs(g) % 25)),
            (power(10::numeric, g % 130)),
            (power(10::numeric, -(abs(g) % 120)) * g),
            (g::numeric * 0.0001),
            (g::numeric * 1e30 + 0.5),
            (-(2::numeric ^ (abs(g) % 400))),
            ((g::numeric / 3)::numeric(20, 10)),
            (round(g::numeric / 7, 40)),
            (g::numeric * 1000000 / 1000000.000),
            (sqrt(abs(g)::numeric + 0.1))
        ) AS t(x)";
        let compared = check_against_text(&client, sql, str::to_owned).await;
        assert!(compared > 500, "only {compared} values compared");
    }

    #[tokio::test]
    async fn intervals_match_iso_8601_style() {
        let client = client().await;
        let sql = "SELECT x, x::text FROM generate_series(-40, 40) AS g, LATERAL (VALUES
            (make_interval(years => g, months => g * 7 % 13, days => g * 3, hours => -g, mins => g * 5, secs => g * 1.234567)),
            (g * interval '1 second' / 7),
            (g * interval '1 month' / 3),
            (g * interval '1 day 25 hours 61 minutes'),
            (make_interval(hours => g * 100000)),
            (make_interval(months => g, secs => -g * 0.5)),
            (justify_interval(g * interval '1 day 20 hours'))
        ) AS t(x)";
        let compared = check_against_text(&client, sql, str::to_owned).await;
        assert!(compared > 500, "only {compared} values compared");
    }

    /// PostgreSQL's ISO `::text` of a date or timestamp in this module's form.
    fn iso_from_postgres(text: &str, utc: bool) -> String {
        let (text, bc) = match text.strip_suffix(" BC") {
            Some(t) => (t, true),
            None => (text, false),
        };
        let text = if utc { text.strip_suffix("+00").expect("UTC offset") } else { text };
        let mut iso = text.replacen(' ', "T", 1);
        if bc {
            let (year, rest) = iso.split_once('-').expect("year");
            let year = 1 - year.parse::<i64>().expect("numeric year");
            iso = if year < 0 {
                format!("-{:04}-{rest}", -year)
            } else {
                format!("{year:04}-{rest}")
            };
        }
        if utc { iso + "Z" } else { iso }
    }

    #[tokio::test]
    async fn dates_and_timestamps_match_postgres_text() {
        let client = client().await;
        let dates = "SELECT date '2000-01-01' + g, (date '2000-01-01' + g)::text
            FROM generate_series(-2400000, 2400000, 997) AS g";
        let timestamps = "SELECT x, x::text FROM generate_series(-1000000, 1000000, 997) AS g,
            LATERAL (VALUES (timestamp '2000-01-01' + g * interval '1 day 1 hour 1.234567 seconds')) AS t(x)";
        let timestamptzs = "SELECT x, x::text FROM generate_series(-1000000, 1000000, 997) AS g,
            LATERAL (VALUES (timestamptz '2000-01-01 00:00+00' + g * interval '1 day 1 hour 1.5 seconds')) AS t(x)";
        let mut compared =
            check_against_text(&client, dates, |t| iso_from_postgres(t, false)).await;
        compared += check_against_text(&client, timestamps, |t| iso_from_postgres(t, false)).await;
        compared += check_against_text(&client, timestamptzs, |t| iso_from_postgres(t, true)).await;
        assert!(compared > 5000, "only {compared} values compared");
    }

    /// Expressions of every supported built-in type, none of them NULL.
    const EVERY_TYPE: &[(&str, &str)] = &[
        ("true", "bool"),
        ("1", "int2"),
        ("1", "int4"),
        ("1", "int8"),
        ("1", "oid"),
        ("'1'", "xid"),
        ("'1'", "xid8"),
        ("'1'", "cid"),
        ("'pg_class'", "regclass"),
        ("'int4'", "regtype"),
        ("'now'", "regproc"),
        ("'sum(int4)'", "regprocedure"),
        ("'+(int4,int4)'", "regoperator"),
        ("'english'", "regconfig"),
        ("'simple'", "regdictionary"),
        ("'public'", "regnamespace"),
        ("'postgres'", "regrole"),
        ("'\"C\"'", "regcollation"),
        ("1.5", "float4"),
        ("1.5", "float8"),
        ("1.5", "numeric"),
        ("'t'", "text"),
        ("'t'", "varchar"),
        ("'t'", "bpchar"),
        ("'t'", "name"),
        ("'t'", "\"char\""),
        ("'t'", "unknown"),
        ("'<t/>'", "xml"),
        ("'c'", "refcursor"),
        ("'[1]'", "json"),
        ("'[1]'", "jsonb"),
        ("'$.a'", "jsonpath"),
        ("gen_random_uuid()", "uuid"),
        ("'2024-01-01'", "date"),
        ("'12:00'", "time"),
        ("'12:00+01'", "timetz"),
        ("'2024-01-01 12:00'", "timestamp"),
        ("'2024-01-01 12:00+01'", "timestamptz"),
        ("'1 day'", "interval"),
        ("'\\xdead'", "bytea"),
        ("'::1'", "inet"),
        ("'10.0.0.0/8'", "cidr"),
        ("'08:00:2b:01:02:03'", "macaddr"),
        ("'08:00:2b:01:02:03:04:05'", "macaddr8"),
        ("1.5", "money"),
        ("B'1'", "bit"),
        ("B'101'", "varbit"),
        ("'(0,1)'", "tid"),
        ("'0/1'", "pg_lsn"),
        ("'10:20:15'", "pg_snapshot"),
        ("'10:20:15'", "txid_snapshot"),
        ("'(1,2)'", "point"),
        ("'[(1,2),(3,4)]'", "lseg"),
        ("'(1,2),(3,4)'", "box"),
        ("'[(1,2),(3,4)]'", "path"),
        ("'((1,2),(3,4),(5,0))'", "polygon"),
        ("'{1,2,3}'", "line"),
        ("'<(1,2),3>'", "circle"),
        ("'a:1 b'", "tsvector"),
        ("'[1,2)'", "int4range"),
        ("'[1,2)'", "int8range"),
        ("'[1.5,2)'", "numrange"),
        ("'[2024-01-01,2024-02-01)'", "daterange"),
        ("'[2024-01-01,2024-02-01)'", "tsrange"),
        ("'[2024-01-01,2024-02-01)'", "tstzrange"),
        ("'{[1,2)}'", "int4multirange"),
        ("'{[1.5,2)}'", "nummultirange"),
        ("'{[2024-01-01,2024-02-01)}'", "tstzmultirange"),
        ("'1 2'", "int2vector"),
        ("'1 2'", "oidvector"),
        ("'{1,NULL}'", "int4[]"),
        ("'{{a,b},{c,d}}'", "text[]"),
        ("'{1.5}'", "numeric[]"),
        ("'{\"[1,2)\"}'", "int4range[]"),
    ];

    /// One row with a column per entry of `EVERY_TYPE`, or NULLs of those types.
    fn every_type_sql(nulls: bool) -> String {
        let columns: Vec<String> = EVERY_TYPE
            .iter()
            .map(|(value, ty)| if nulls { format!("NULL::{ty}") } else { format!("{value}::{ty}") })
            .collect();
        format!("SELECT {}", columns.join(", "))
    }

    #[tokio::test]
    async fn every_type_in_one_row() {
        let client = client().await;
        let values = decode_rows(&client, &every_type_sql(false)).await.remove(0);
        assert_eq!(values.len(), EVERY_TYPE.len());
        for ((value, ty), decoded) in EVERY_TYPE.iter().zip(&values) {
            assert_ne!(decoded, &Value::Null, "{value}::{ty}");
        }
        let nulls = decode_rows(&client, &every_type_sql(true)).await.remove(0);
        assert!(nulls.iter().all(Value::is_null), "{nulls:?}");
    }

    #[tokio::test]
    async fn type_names() {
        let client = client().await;
        let stmt = client
            .prepare("SELECT 1::int4, ARRAY[1]::int4[], 1.5::numeric, 'x'::varchar, '1'::int2vector, ARRAY['{}'::jsonb]")
            .await
            .expect("prepare");
        let names: Vec<String> = stmt.columns().iter().map(|c| type_name(c.type_())).collect();
        assert_eq!(names, ["int4", "int4[]", "numeric", "varchar", "int2vector", "jsonb[]"]);
    }

    #[tokio::test]
    async fn user_defined_and_extension_types() {
        let db = custard_testkit::ScratchDb::create("pgval").await;
        let client = db.client().await;
        client
            .batch_execute(
                "CREATE SCHEMA s;
                 CREATE TYPE s.mood AS ENUM ('sad', 'ok', 'happy');
                 CREATE DOMAIN s.positive AS int CHECK (VALUE > 0);
                 CREATE DOMAIN s.tags AS text[];
                 CREATE TYPE s.pair AS (label text, amount numeric, at date);
                 CREATE TYPE s.textrange AS RANGE (subtype = text);
                 CREATE EXTENSION citext;
                 CREATE EXTENSION hstore;
                 CREATE EXTENSION ltree;
                 CREATE TABLE s.t AS SELECT CASE WHEN g <= 70 THEN 'a' ELSE 'b' END AS w
                     FROM generate_series(1, 100) AS g;
                 ANALYZE s.t;",
            )
            .await
            .expect("schema");
        prepare_session(&client).await;
        check_all(
            &client,
            &[
                ("'happy'::s.mood", r#""happy""#),
                ("ARRAY['sad', NULL, 'ok']::s.mood[]", r#"["sad", null, "ok"]"#),
                ("5::s.positive", "5"),
                ("ARRAY['a', 'b']::s.tags", r#"["a", "b"]"#),
                (
                    "ROW('x', 1.50, '2024-01-01')::s.pair",
                    r#"{"label": "x", "amount": "1.50", "at": "2024-01-01"}"#,
                ),
                ("ROW(NULL, NULL, NULL)::s.pair", r#"{"label": null, "amount": null, "at": null}"#),
                (
                    "ARRAY[ROW('y', 2, NULL)::s.pair]",
                    r#"[{"label": "y", "amount": "2", "at": null}]"#,
                ),
                ("'MiXed'::citext", r#""MiXed""#),
                (r#"'a=>1, "b c"=>NULL'::hstore"#, r#"{"a": "1", "b c": null}"#),
                ("'top.science.astronomy'::ltree", r#""top.science.astronomy""#),
                ("'*.science.*'::lquery", r#""*.science.*""#),
                ("(SELECT most_common_vals FROM pg_stats WHERE tablename = 't')", r#"["a", "b"]"#),
            ],
        )
        .await;
        check_same_as_text(
            &client,
            &[
                "s.textrange('a', 'b c')",
                r#"s.textrange('', 'x"y\z', '[]')"#,
                "s.textrange('(', NULL)",
            ],
        )
        .await;
        let stmt =
            client.prepare("SELECT 'ok'::s.mood, ARRAY['ok']::s.mood[]").await.expect("prepare");
        let names: Vec<String> = stmt.columns().iter().map(|c| type_name(c.type_())).collect();
        assert_eq!(names, ["mood", "mood[]"]);
    }

    /// The raw bytes of a column, to feed the decoder malformed variants of them.
    struct Raw(Vec<u8>);

    impl<'a> FromSql<'a> for Raw {
        fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
            Ok(Raw(raw.to_vec()))
        }

        fn accepts(_: &Type) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn damaged_bytes_never_panic() {
        let client = client().await;
        let row = client.query_one(&every_type_sql(false), &[]).await.expect("row");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (idx, column) in row.columns().iter().enumerate() {
            let ty = column.type_();
            let Raw(bytes) = row.get(idx);
            assert!(PgValue::from_sql(ty, &bytes).is_ok(), "{ty}");
            for len in 0..bytes.len() {
                let _ = PgValue::from_sql(ty, &bytes[..len]);
            }
            for _ in 0..200 {
                let mut damaged = bytes.clone();
                if let Some(len) = damaged.len().checked_sub(1) {
                    let at = (next() as usize) % (len + 1);
                    damaged[at] = next() as u8;
                }
                damaged.extend((0..next() % 3).map(|_| next() as u8));
                let _ = PgValue::from_sql(ty, &damaged);
                let noise: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
                let _ = PgValue::from_sql(ty, &noise);
            }
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        let record_bomb = (0..1_000).fold(Vec::new(), |inner, _| {
            let mut outer = Vec::new();
            outer.extend(1i32.to_be_bytes());
            outer.extend(Type::RECORD.oid().to_be_bytes());
            outer.extend(i32::try_from(inner.len()).expect("fits").to_be_bytes());
            outer.extend(inner);
            outer
        });
        let cases: &[(Type, &[u8])] = &[
            (Type::INT4, &[0, 0, 1]),
            (Type::INT4, &[0, 0, 0, 1, 2]),
            (Type::BOOL, &[]),
            (Type::NUMERIC, &[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]),
            (Type::NUMERIC, &[0, 1, 0, 0, 0x12, 0x34, 0, 0, 0, 1]),
            (Type::NUMERIC, &[0xff, 0xff, 0, 0, 0, 0, 0, 0]),
            (Type::NUMERIC, &[0, 2, 0, 0, 0, 0, 0, 0, 0, 1]),
            (Type::TEXT, &[0xff, 0xfe]),
            (Type::JSONB, &[2, b'1']),
            (Type::JSONB, &[]),
            (Type::UUID, &[0; 15]),
            (Type::INET, &[9, 32, 0, 4, 1, 2, 3, 4]),
            (Type::INET, &[2, 33, 0, 4, 1, 2, 3, 4]),
            (Type::INET, &[3, 128, 0, 4, 1, 2, 3, 4]),
            (Type::DATE, &[0x80, 0, 0, 1]),
            (Type::TIME, &[0xff; 8]),
            (Type::BIT, &[0, 0, 0, 9, 0xff]),
            (Type::BIT, &[0xff, 0xff, 0xff, 0xff]),
            (Type::CHAR, &[1, 2]),
            (
                Type::INT4_ARRAY,
                &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1],
            ),
            (Type::INT4_ARRAY, &[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 23]),
            (
                Type::INT4_ARRAY,
                &[
                    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff,
                    0xfe,
                ],
            ),
            (Type::INT4_RANGE, &[0x02, 0xff, 0xff, 0xff, 0xff]),
            (Type::POLYGON, &[0x7f, 0xff, 0xff, 0xff]),
            (Type::RECORD, &record_bomb),
        ];
        for (ty, bytes) in cases {
            let result = PgValue::from_sql(ty, bytes);
            assert!(result.is_err(), "{ty} {bytes:?} decoded as {result:?}");
        }
    }

    #[test]
    fn unknown_types_fall_back_to_text_or_base64() {
        let ty = Type::new("mystery".to_owned(), 99_999, Kind::Simple, "public".to_owned());
        let decoded =
            |raw: &[u8]| PgValue::from_sql(&ty, raw).map(|v| v.0).map_err(|e| e.to_string());
        assert_eq!(decoded(b"plain text\n"), Ok(Value::String("plain text\n".to_owned())));
        assert_eq!(decoded(&[0, 1, 2]), Ok(Value::String("AAEC".to_owned())));
        assert_eq!(decoded(&[0xff]), Ok(Value::String("/w==".to_owned())));
    }

    #[test]
    fn float_text_follows_float8out() {
        let cases = [
            (1.0, "1"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e15, "1e+15"),
            (123_456_789_012_345.0, "123456789012345"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (1e100, "1e+100"),
            (-0.0, "-0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(float_text(f), want, "{f}");
        }
    }
}
