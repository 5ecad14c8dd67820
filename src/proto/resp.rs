//! RESP, the protocol of the Redis bridge: commands → bytes, replies and pushes → [`Value`]
//! views borrowed from the bytes read. Feature `redis`.
//!
//! - **In:** command arguments and a caller-owned `Vec`; or the bytes read so far from the
//!   broker and the [`Limits`] they must stay within.
//! - **Out:** a RESP2 array of bulk strings appended to the `Vec`; or `Partial`, one
//!   [`Value`] with the bytes it took, or the first broken rule as a [`RespError`], reported
//!   as soon as the bytes that decide it are there.
//! - **Never:** allocates (arrays are views that parse their elements when iterated),
//!   recurses on peer input, looks past [`Limits::max_value_len`] bytes, or panics.
//!
//! RESP2 is complete and strict: `+` simple strings, `-` errors, `:` integers, `$` bulk
//! strings (`$-1` null) and `*` arrays (`*-1` null). The RESP3 types Redis sends after
//! `HELLO 3` are accepted only with [`Limits::resp3`]: `_` null, `#` boolean, `,` double and
//! `(` big number (as borrowed text), `!` blob error, `=` verbatim string, and the `>` push,
//! `~` set and `%` map aggregates. **Not** supported: RESP3 attributes (`|`) and streamed
//! strings and aggregates (`$?`, `*?`), which Redis does not send to a client that did not ask
//! for them.
//!
//! # Why arrays are views
//!
//! An [`Array`] is its element count and the bytes of its elements, already validated to the
//! last byte by [`parse`]; [`Array::iter`] parses one element at a time from those bytes. A
//! tree of values would need storage per element (a `Vec`, or a slice the caller sizes for
//! the worst reply), while a view costs nothing until it is read, and the replies the bridge
//! reads are short flat arrays (`pmessage` has four elements, a subscribe confirmation
//! three). The price is that reading nested arrays parses inner bytes again, once per level:
//! bounded by [`Limits::max_depth`], and never the payload of a bulk string, which is skipped
//! by its length.
//!
//! # Example
//!
//! ```
//! use emberws::proto::resp::{self, Limits, PubSub, Value};
//! use emberws::proto::Status;
//!
//! let mut out = Vec::new();
//! resp::encode_command(&mut out, &[b"PUBLISH", b"emberws:s/temp", b"21.5"]);
//! assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$14\r\nemberws:s/temp\r\n$4\r\n21.5\r\n");
//!
//! let read = b":2\r\n*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
//! let Ok(Status::Complete((Value::Integer(2), n))) = resp::parse(read, &Limits::DEFAULT) else {
//!     panic!("an integer reply");
//! };
//! let Ok(Status::Complete((push, _))) = resp::parse(&read[n..], &Limits::DEFAULT) else {
//!     panic!("a push");
//! };
//! assert_eq!(
//!     PubSub::from_value(&push),
//!     Some(PubSub::Message { channel: b"news", payload: b"hi" })
//! );
//! ```

use core::fmt;
use core::iter::FusedIterator;

use super::Status;

mod pubsub;

pub use pubsub::PubSub;

/// The deepest nesting [`parse`] follows, whatever [`Limits::max_depth`] says: the parser
/// keeps one count per open aggregate in a fixed array of this many entries.
pub const MAX_DEPTH: usize = 32;

/// What one value read from the broker may hold. Every limit is checked as soon as the bytes
/// that decide it are there, before waiting for more.
///
/// The parser holds nothing: the bytes of a value stay in the caller's buffer until it is
/// complete, so [`Limits::max_value_len`] is the buffer a connection to the broker needs, and
/// the bound in bytes; the counts and lengths below make a header that could never fit fail
/// at once instead of after buffering. Build variations as
/// `Limits { max_depth: 2, ..Limits::DEFAULT }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one whole value, headers and nested values included; past it,
    /// [`RespError::ValueTooLong`], as soon as a bulk header announces more or that many
    /// bytes hold no complete value. Default 1 MiB + 128 KiB: one bulk string of
    /// `max_bulk_len` with a `pmessage`'s pattern and channel around it.
    pub max_value_len: usize,
    /// Bytes of one bulk string (also a blob error or verbatim string); past it,
    /// [`RespError::BulkTooLong`], from the length digits alone. Default 1 MiB + 64 KiB: a
    /// message of 1 MiB with room for its topic and envelope.
    pub max_bulk_len: usize,
    /// Elements of one array, push or set, a map entry counting two; past it,
    /// [`RespError::ArrayTooLong`], from the count digits alone. Default 65,536.
    pub max_array_len: usize,
    /// Aggregates nested in one another, the outermost counting one, at most (and never more
    /// than [`MAX_DEPTH`]); past it, [`RespError::TooDeep`]. Default 8: the bridge's replies
    /// nest one level, Redis's deepest common replies (stream reads) four.
    pub max_depth: usize,
    /// Bytes between the type byte and the CRLF of a line: a simple string, an error, an
    /// integer, a length or a RESP3 scalar; past it, [`RespError::LineTooLong`], without
    /// waiting for the CRLF. Default 8 KiB, far above the few hundred bytes of Redis's
    /// longest error lines.
    pub max_line_len: usize,
    /// Accepts the RESP3 types (after `HELLO 3`). Off by default: on a RESP2 connection a
    /// RESP3 type byte is [`RespError::UnexpectedResp3`].
    pub resp3: bool,
}

impl Limits {
    /// The defaults, documented on each field.
    pub const DEFAULT: Limits = Limits {
        max_value_len: (1 << 20) + (128 << 10),
        max_bulk_len: (1 << 20) + (64 << 10),
        max_array_len: 1 << 16,
        max_depth: 8,
        max_line_len: 8 << 10,
        resp3: false,
    };

    /// What an element of an already validated aggregate is parsed with: it passed the
    /// caller's limits once, so none of these can fail.
    const VALIDATED: Limits = Limits {
        max_value_len: usize::MAX,
        max_bulk_len: usize::MAX,
        max_array_len: usize::MAX,
        max_depth: MAX_DEPTH,
        max_line_len: usize::MAX,
        resp3: true,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// One RESP value, borrowing its strings from the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'b> {
    /// `+`: a status line such as `OK` or `PONG` (no CR or LF in it).
    Simple(&'b [u8]),
    /// `-`, and RESP3 `!` (blob error): an error reply such as `ERR unknown command`; its
    /// first word is the kind of error.
    Error(&'b [u8]),
    /// `:`: a signed 64-bit integer.
    Integer(i64),
    /// `$`: a binary-safe string.
    Bulk(&'b [u8]),
    /// `$-1` and `*-1` (RESP2), `_` (RESP3): no value.
    Null,
    /// `*`: an array.
    Array(Array<'b>),
    /// RESP3 `>`: out-of-band data, such as a pub/sub message after `HELLO 3`.
    Push(Array<'b>),
    /// RESP3 `~`: a set, in the order sent.
    Set(Array<'b>),
    /// RESP3 `%`: a map, its elements alternately keys and values ([`Array::pairs`]).
    Map(Array<'b>),
    /// RESP3 `#`: `t` or `f`.
    Boolean(bool),
    /// RESP3 `,`: a double as its text (`1.5`, `-2e10`, `inf`, `nan`), checked only for its
    /// characters.
    Double(&'b [u8]),
    /// RESP3 `(`: an integer of any size, as an optional sign and its digits.
    BigNumber(&'b [u8]),
    /// RESP3 `=`: text with its three-byte format, `txt` or `mkd`.
    Verbatim {
        /// The format, the three bytes before the `:`.
        format: &'b [u8],
        /// The text after the `:`.
        text: &'b [u8],
    },
}

/// The elements of an array, push, set or map: a count and the bytes they were parsed from.
///
/// Copying it copies three words. [`Array::iter`] parses the elements one at a time and
/// never fails: [`parse`] validated every byte, within the limits, before returning the
/// array.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Array<'b> {
    len: usize,
    bytes: &'b [u8],
}

impl<'b> Array<'b> {
    /// The number of elements; a map of `n` entries has `2n`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an aggregate without elements (`*0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, in order.
    pub fn iter(&self) -> Iter<'b> {
        Iter {
            rest: self.bytes,
            left: self.len,
        }
    }

    /// The elements two at a time: the entries of a map, or the field and value pairs of a
    /// flat `HGETALL` reply in RESP2. An odd last element is not yielded.
    pub fn pairs(&self) -> Pairs<'b> {
        Pairs(self.iter())
    }

    /// The encoded elements, from the first byte of the first to the last of the last.
    pub fn as_bytes(&self) -> &'b [u8] {
        self.bytes
    }
}

impl fmt::Debug for Array<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nested no deeper than `MAX_DEPTH`, so this recursion is bounded too.
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'b> IntoIterator for Array<'b> {
    type Item = Value<'b>;
    type IntoIter = Iter<'b>;

    fn into_iter(self) -> Iter<'b> {
        self.iter()
    }
}

impl<'b> IntoIterator for &Array<'b> {
    type Item = Value<'b>;
    type IntoIter = Iter<'b>;

    fn into_iter(self) -> Iter<'b> {
        self.iter()
    }
}

/// The elements of an [`Array`], parsed as they are asked for.
#[derive(Clone, Debug)]
pub struct Iter<'b> {
    rest: &'b [u8],
    left: usize,
}

impl<'b> Iterator for Iter<'b> {
    type Item = Value<'b>;

    fn next(&mut self) -> Option<Value<'b>> {
        if self.left == 0 {
            return None;
        }
        match walk(self.rest, &Limits::VALIDATED) {
            Ok(Some((value, used))) => {
                self.left -= 1;
                self.rest = self.rest.get(used..).unwrap_or_default();
                Some(value)
            }
            // Unreachable: the bytes were validated with stricter limits. Ending the
            // iteration keeps even a broken invariant from reaching a panic.
            Ok(None) | Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl FusedIterator for Iter<'_> {}

/// The elements of an [`Array`] two at a time.
#[derive(Clone, Debug)]
pub struct Pairs<'b>(Iter<'b>);

impl<'b> Iterator for Pairs<'b> {
    type Item = (Value<'b>, Value<'b>);

    fn next(&mut self) -> Option<(Value<'b>, Value<'b>)> {
        let key = self.0.next()?;
        let value = self.0.next()?;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.left / 2;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Pairs<'_> {}

impl FusedIterator for Pairs<'_> {}

/// A broken rule of RESP, or a passed [`Limits`] field. Small and `Copy`, it never
/// allocates. After one the stream cannot be resynchronised: drop the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    /// A byte that starts no supported type (RESP3 attributes `|` included).
    InvalidType(u8),
    /// A RESP3 type byte while [`Limits::resp3`] is off.
    UnexpectedResp3(u8),
    /// A CR not followed by LF, or a LF without a CR before it, in or after a line.
    InvalidLineEnd,
    /// A length or count that is not decimal digits: empty, signed, or with other bytes.
    InvalidLength,
    /// A negative length or count other than RESP2's null, `$-1` or `*-1`.
    NegativeLength,
    /// An integer (`:`) or big number (`(`) that is not an optional sign and digits.
    InvalidInteger,
    /// An integer outside the signed 64-bit range.
    IntegerOverflow,
    /// A RESP3 boolean other than `#t` or `#f`.
    InvalidBoolean,
    /// A RESP3 null (`_`) with something before its CRLF.
    InvalidNull,
    /// A RESP3 double whose text is not a number, `inf` or `nan`.
    InvalidDouble,
    /// A RESP3 verbatim string without its `xxx:` format prefix.
    InvalidVerbatim,
    /// A bulk string whose announced length is not followed by CRLF.
    MissingBulkCrlf,
    /// A line longer than [`Limits::max_line_len`].
    LineTooLong,
    /// A bulk string longer than [`Limits::max_bulk_len`].
    BulkTooLong,
    /// An aggregate with more elements than [`Limits::max_array_len`].
    ArrayTooLong,
    /// Aggregates nested deeper than [`Limits::max_depth`].
    TooDeep,
    /// A value longer than [`Limits::max_value_len`].
    ValueTooLong,
}

impl RespError {
    /// A short description, without allocation.
    pub fn as_str(self) -> &'static str {
        match self {
            RespError::InvalidType(_) => "invalid type byte",
            RespError::UnexpectedResp3(_) => "RESP3 type on a RESP2 connection",
            RespError::InvalidLineEnd => "CR and LF not paired",
            RespError::InvalidLength => "invalid length",
            RespError::NegativeLength => "negative length",
            RespError::InvalidInteger => "invalid integer",
            RespError::IntegerOverflow => "integer out of range",
            RespError::InvalidBoolean => "invalid boolean",
            RespError::InvalidNull => "invalid null",
            RespError::InvalidDouble => "invalid double",
            RespError::InvalidVerbatim => "verbatim string without format",
            RespError::MissingBulkCrlf => "bulk string not followed by CRLF",
            RespError::LineTooLong => "line too long",
            RespError::BulkTooLong => "bulk string too long",
            RespError::ArrayTooLong => "too many elements",
            RespError::TooDeep => "nested too deep",
            RespError::ValueTooLong => "value too long",
        }
    }
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RespError::InvalidType(b) | RespError::UnexpectedResp3(b) => {
                write!(f, "{} {b:#04x}", self.as_str())
            }
            e => f.write_str(e.as_str()),
        }
    }
}

impl std::error::Error for RespError {}

/// Parses one value from the start of `buf`. Never panics.
///
/// Returns the value and the bytes it took, or `Partial` if `buf` holds only the start of
/// one. Bytes after the value are the next values (replies are pipelined): parse again from
/// `buf[used..]`. An error is decided by the bytes up to the offending one: a shorter `buf`
/// gives `Partial` or the same error, a longer one the same error.
///
/// # Warning
/// Every call starts again at the first byte. The work is proportional to the lines and
/// headers of the buffered bytes, never to bulk payload (skipped by its length), and at most
/// [`Limits::max_value_len`] bytes are looked at; call again after a read adds bytes, not in
/// a loop over the same ones.
///
/// # Errors
/// Every rule of the format and every limit (see [`RespError`]).
pub fn parse<'b>(buf: &'b [u8], limits: &Limits) -> Result<Status<(Value<'b>, usize)>, RespError> {
    if buf.is_empty() {
        return Ok(Status::Partial);
    }
    let view = buf.get(..limits.max_value_len).unwrap_or(buf);
    match walk(view, limits)? {
        Some(done) => Ok(Status::Complete(done)),
        // `max_value_len` bytes hold no whole value: more bytes cannot help.
        None if buf.len() >= limits.max_value_len => Err(RespError::ValueTooLong),
        None => Ok(Status::Partial),
    }
}

/// Appends `args` as a command: a RESP2 array of bulk strings, the form Redis reads
/// (`*3\r\n$7\r\nPUBLISH\r\n…`). The only allocation is `out` growing, reserved once.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(command_len(args));
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// How many bytes [`encode_command`] appends for `args`: to check a queue's byte bound before
/// encoding.
pub fn command_len(args: &[&[u8]]) -> usize {
    args.iter().fold(header_len(args.len()), |sum, arg| {
        sum.saturating_add(header_len(arg.len()))
            .saturating_add(arg.len())
            .saturating_add(2)
    })
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Writes the decimal digits of `n` at the end of `digits`; returns where they start.
fn decimal(mut n: usize, digits: &mut [u8; 20]) -> usize {
    let mut at = digits.len();
    while at > 0 {
        at -= 1;
        // `n % 10 < 10`: the cast keeps every bit.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at
}

/// Appends `ty`, `n` in decimal and CRLF.
fn push_header(out: &mut Vec<u8>, ty: u8, n: usize) {
    let mut digits = [0u8; 20];
    let at = decimal(n, &mut digits);
    out.push(ty);
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

/// The length of `push_header`'s output for `n`.
fn header_len(n: usize) -> usize {
    let mut digits = [0u8; 20];
    1 + (digits.len() - decimal(n, &mut digits)) + 2
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Internal results: `Ok(None)` is `Partial`.
type Step<T> = Result<Option<T>, RespError>;

/// The four aggregate types.
#[derive(Clone, Copy)]
enum Kind {
    Array,
    Push,
    Set,
    Map,
}

/// What one header (a type byte and its line, with the payload of a bulk string) gave.
enum Head<'b> {
    Scalar(Value<'b>),
    /// An aggregate and its element count (a map's entries counted twice).
    Aggregate(Kind, usize),
}

/// Parses one whole value from the start of `buf`, without recursion: one count of the
/// elements still to read per open aggregate, in a fixed array.
fn walk<'b>(buf: &'b [u8], limits: &Limits) -> Step<(Value<'b>, usize)> {
    let Some((head, start)) = header(buf, 0, limits)? else {
        return Ok(None);
    };
    let (kind, len) = match head {
        Head::Scalar(value) => return Ok(Some((value, start))),
        Head::Aggregate(kind, len) => (kind, len),
    };
    let max_depth = limits.max_depth.min(MAX_DEPTH);
    let mut left = [0usize; MAX_DEPTH];
    let mut depth = 0;
    let mut at = start;
    // The outermost aggregate is opened like every nested one, so its depth counts too.
    let mut opened = Some(len);
    loop {
        if let Some(n) = opened.take() {
            let Some(slot) = left.get_mut(depth).filter(|_| depth < max_depth) else {
                return Err(RespError::TooDeep);
            };
            *slot = n;
            depth += 1;
        }
        // Close every aggregate whose last element has been read.
        while depth > 0 && left.get(depth - 1) == Some(&0) {
            depth -= 1;
        }
        let Some(remaining) = depth.checked_sub(1).and_then(|d| left.get_mut(d)) else {
            break;
        };
        *remaining -= 1;
        let Some((head, next)) = header(buf, at, limits)? else {
            return Ok(None);
        };
        at = next;
        if let Head::Aggregate(_, n) = head {
            opened = Some(n);
        }
    }
    let array = Array {
        len,
        bytes: buf.get(start..at).unwrap_or_default(),
    };
    let value = match kind {
        Kind::Array => Value::Array(array),
        Kind::Push => Value::Push(array),
        Kind::Set => Value::Set(array),
        Kind::Map => Value::Map(array),
    };
    Ok(Some((value, at)))
}

/// True for the type bytes only RESP3 defines.
fn is_resp3(ty: u8) -> bool {
    matches!(
        ty,
        b'_' | b'#' | b',' | b'(' | b'!' | b'=' | b'>' | b'~' | b'%'
    )
}

/// Parses the header of the value at `at`: a whole scalar, or an aggregate's count.
fn header<'b>(buf: &'b [u8], at: usize, limits: &Limits) -> Step<(Head<'b>, usize)> {
    let Some(&ty) = buf.get(at) else {
        return Ok(None);
    };
    if !limits.resp3 && is_resp3(ty) {
        return Err(RespError::UnexpectedResp3(ty));
    }
    let at = at + 1;
    let value = match ty {
        b'*' => return aggregate(buf, at, limits, Kind::Array),
        b'>' => return aggregate(buf, at, limits, Kind::Push),
        b'~' => return aggregate(buf, at, limits, Kind::Set),
        b'%' => return aggregate(buf, at, limits, Kind::Map),
        b'+' => line(buf, at, limits)?.map(|(text, next)| (Value::Simple(text), next)),
        b'-' => line(buf, at, limits)?.map(|(text, next)| (Value::Error(text), next)),
        b':' => match line(buf, at, limits)? {
            Some((text, next)) => Some((Value::Integer(decode_i64(text)?), next)),
            None => None,
        },
        b'$' => blob(buf, at, limits, Null::Allowed, Value::Bulk)?,
        b'!' => blob(buf, at, limits, Null::Refused, Value::Error)?,
        b'=' => verbatim(buf, at, limits)?,
        b'_' => crlf(buf, at, RespError::InvalidNull)?.map(|next| (Value::Null, next)),
        b'#' => {
            let flag = match buf.get(at) {
                None => return Ok(None),
                Some(b't') => true,
                Some(b'f') => false,
                Some(_) => return Err(RespError::InvalidBoolean),
            };
            crlf(buf, at + 1, RespError::InvalidBoolean)?.map(|next| (Value::Boolean(flag), next))
        }
        b',' => match line(buf, at, limits)? {
            Some((text, _)) if !is_double(text) => return Err(RespError::InvalidDouble),
            Some((text, next)) => Some((Value::Double(text), next)),
            None => None,
        },
        b'(' => match line(buf, at, limits)? {
            Some((text, _)) if !is_big_number(text) => return Err(RespError::InvalidInteger),
            Some((text, next)) => Some((Value::BigNumber(text), next)),
            None => None,
        },
        other => return Err(RespError::InvalidType(other)),
    };
    Ok(value.map(|(value, next)| (Head::Scalar(value), next)))
}

/// Whether a negative length may mean null: RESP2's `$-1` and `*-1` only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Null {
    Allowed,
    Refused,
}

/// The line from `at` to its CRLF, and the index after the LF. No CR or LF inside it.
fn line<'b>(buf: &'b [u8], at: usize, limits: &Limits) -> Step<(&'b [u8], usize)> {
    let rest = buf.get(at..).unwrap_or_default();
    // One byte past the longest line decides `LineTooLong` without waiting for more.
    let window = rest
        .get(..limits.max_line_len.saturating_add(1))
        .unwrap_or(rest);
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(end) => {
            let text = window.get(..end).unwrap_or_default();
            Ok(crlf(buf, at + end, RespError::InvalidLineEnd)?.map(|next| (text, next)))
        }
        None if window.len() > limits.max_line_len => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

/// `buf[at..at + 2]` must be CRLF: `not_cr` if the first byte is not CR. Returns the index
/// after the LF.
fn crlf(buf: &[u8], at: usize, not_cr: RespError) -> Step<usize> {
    match buf.get(at) {
        None => return Ok(None),
        Some(b'\r') => {}
        Some(_) => return Err(not_cr),
    }
    match buf.get(at + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(at + 2)),
        Some(_) => Err(RespError::InvalidLineEnd),
    }
}

/// A length or count line from `at`: decimal digits up to `max` (else `too_big`), or `-1`
/// (`None`) where `null` allows it. Decided digit by digit: a count over `max` fails on the
/// digit that passes it, before its CRLF arrives.
fn length(
    buf: &[u8],
    at: usize,
    limits: &Limits,
    max: usize,
    too_big: RespError,
    null: Null,
) -> Step<(Option<usize>, usize)> {
    if buf.get(at) == Some(&b'-') {
        // RESP2: `$-1` and `*-1` are null; no other negative length exists.
        match buf.get(at + 1) {
            None => return Ok(None),
            Some(b'1') if null == Null::Allowed => {}
            Some(d) if d.is_ascii_digit() => return Err(RespError::NegativeLength),
            Some(_) => return Err(RespError::InvalidLength),
        }
        return match buf.get(at + 2) {
            None => Ok(None),
            Some(d) if d.is_ascii_digit() => Err(RespError::NegativeLength),
            Some(b'\r') => Ok(crlf(buf, at + 2, RespError::InvalidLength)?.map(|n| (None, n))),
            Some(_) => Err(RespError::InvalidLength),
        };
    }
    let mut n: usize = 0;
    let mut i = at;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(&d) if d.is_ascii_digit() => {
                if i - at >= limits.max_line_len {
                    return Err(RespError::LineTooLong);
                }
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(usize::from(d - b'0')))
                    .filter(|&n| n <= max)
                    .ok_or(too_big)?;
                i += 1;
            }
            // At least one digit: `$\r\n` has no length.
            Some(b'\r') if i > at => break,
            Some(_) => return Err(RespError::InvalidLength),
        }
    }
    Ok(crlf(buf, i, RespError::InvalidLength)?.map(|next| (Some(n), next)))
}

/// A bulk string or blob error from its length line at `at`: the payload and its CRLF.
fn blob<'b>(
    buf: &'b [u8],
    at: usize,
    limits: &Limits,
    null: Null,
    wrap: fn(&'b [u8]) -> Value<'b>,
) -> Step<(Value<'b>, usize)> {
    let max = limits.max_bulk_len;
    let Some((len, start)) = length(buf, at, limits, max, RespError::BulkTooLong, null)? else {
        return Ok(None);
    };
    let Some(len) = len else {
        return Ok(Some((Value::Null, start)));
    };
    fits(start, len, limits)?;
    Ok(payload(buf, start, len)?.map(|(bytes, next)| (wrap(bytes), next)))
}

/// A RESP3 verbatim string: a blob of at least four bytes, the fourth a `:`.
fn verbatim<'b>(buf: &'b [u8], at: usize, limits: &Limits) -> Step<(Value<'b>, usize)> {
    let max = limits.max_bulk_len;
    let too_big = RespError::BulkTooLong;
    let Some((len, start)) = length(buf, at, limits, max, too_big, Null::Refused)? else {
        return Ok(None);
    };
    let len = len.unwrap_or_default();
    if len < 4 {
        return Err(RespError::InvalidVerbatim);
    }
    fits(start, len, limits)?;
    // Decided by the fourth payload byte, before the rest arrives.
    match buf.get(start + 3) {
        None => return Ok(None),
        Some(b':') => {}
        Some(_) => return Err(RespError::InvalidVerbatim),
    }
    let Some((bytes, next)) = payload(buf, start, len)? else {
        return Ok(None);
    };
    let (format, text) = bytes.split_at(3);
    let text = text.get(1..).unwrap_or_default();
    Ok(Some((Value::Verbatim { format, text }, next)))
}

/// Whether a payload of `len` bytes at `start`, with its CRLF, fits the value limit: the
/// header alone decides it.
fn fits(start: usize, len: usize, limits: &Limits) -> Result<(), RespError> {
    if start.saturating_add(len).saturating_add(2) > limits.max_value_len {
        return Err(RespError::ValueTooLong);
    }
    Ok(())
}

/// `len` payload bytes at `start` and the CRLF after them; the payload is not looked at.
fn payload(buf: &[u8], start: usize, len: usize) -> Step<(&[u8], usize)> {
    let end = start.saturating_add(len);
    for (i, want) in [(end, b'\r'), (end.saturating_add(1), b'\n')] {
        match buf.get(i) {
            None => return Ok(None),
            Some(&b) if b == want => {}
            Some(_) => return Err(RespError::MissingBulkCrlf),
        }
    }
    Ok(buf.get(start..end).map(|bytes| (bytes, end + 2)))
}

/// An aggregate's count line from `at`.
fn aggregate<'b>(buf: &'b [u8], at: usize, limits: &Limits, kind: Kind) -> Step<(Head<'b>, usize)> {
    let (max, null) = match kind {
        Kind::Array => (limits.max_array_len, Null::Allowed),
        // A map entry is two elements.
        Kind::Map => (limits.max_array_len / 2, Null::Refused),
        Kind::Push | Kind::Set => (limits.max_array_len, Null::Refused),
    };
    let Some((count, next)) = length(buf, at, limits, max, RespError::ArrayTooLong, null)? else {
        return Ok(None);
    };
    let head = match (count, kind) {
        (None, _) => Head::Scalar(Value::Null),
        // No overflow: `n <= max_array_len / 2`.
        (Some(n), Kind::Map) => Head::Aggregate(kind, n * 2),
        (Some(n), _) => Head::Aggregate(kind, n),
    };
    Ok(Some((head, next)))
}

/// An optional sign and decimal digits, in the signed 64-bit range.
fn decode_i64(text: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(RespError::InvalidInteger);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::InvalidInteger);
        }
        let d = i64::from(d - b'0');
        // Accumulating on the sign's side reaches `i64::MIN` without overflowing.
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or(RespError::IntegerOverflow)?;
    }
    Ok(n)
}

/// A RESP3 big number: an optional sign and at least one digit, of any length.
fn is_big_number(text: &[u8]) -> bool {
    let digits = match text.split_first() {
        Some((b'-' | b'+', rest)) => rest,
        _ => text,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The text of a RESP3 double: `inf`, `-inf`, `nan`, or digits with signs, a point and an
/// exponent (the characters are checked, not their order).
fn is_double(text: &[u8]) -> bool {
    matches!(text, b"inf" | b"+inf" | b"-inf" | b"nan" | b"-nan")
        || (text.iter().any(u8::is_ascii_digit)
            && text
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed value as an owned tree, read through the public accessors (so [`Array::iter`]
    /// is exercised on every aggregate).
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Own {
        Simple(Vec<u8>),
        Error(Vec<u8>),
        Int(i64),
        Bulk(Vec<u8>),
        Null,
        Array(Vec<Own>),
        Push(Vec<Own>),
        Set(Vec<Own>),
        Map(Vec<Own>),
        Bool(bool),
        Double(Vec<u8>),
        Big(Vec<u8>),
        Verbatim(Vec<u8>, Vec<u8>),
    }

    fn own(v: Value<'_>) -> Own {
        let list = |a: Array<'_>| {
            let it = a.iter();
            assert_eq!(it.len(), a.len());
            let items: Vec<Own> = it.map(own).collect();
            assert_eq!(items.len(), a.len(), "every element is yielded");
            assert_eq!(a.is_empty(), items.is_empty());
            items
        };
        match v {
            Value::Simple(s) => Own::Simple(s.to_vec()),
            Value::Error(s) => Own::Error(s.to_vec()),
            Value::Integer(n) => Own::Int(n),
            Value::Bulk(s) => Own::Bulk(s.to_vec()),
            Value::Null => Own::Null,
            Value::Array(a) => Own::Array(list(a)),
            Value::Push(a) => Own::Push(list(a)),
            Value::Set(a) => Own::Set(list(a)),
            Value::Map(a) => Own::Map(list(a)),
            Value::Boolean(b) => Own::Bool(b),
            Value::Double(s) => Own::Double(s.to_vec()),
            Value::BigNumber(s) => Own::Big(s.to_vec()),
            Value::Verbatim { format, text } => Own::Verbatim(format.to_vec(), text.to_vec()),
        }
    }

    fn simple(s: &str) -> Own {
        Own::Simple(s.as_bytes().to_vec())
    }

    fn bulk(s: &[u8]) -> Own {
        Own::Bulk(s.to_vec())
    }

    const R2: Limits = Limits::DEFAULT;
    const R3: Limits = Limits {
        resp3: true,
        ..Limits::DEFAULT
    };

    type Parsed = Result<Status<(Own, usize)>, RespError>;

    fn parsed(buf: &[u8], limits: &Limits) -> Parsed {
        parse(buf, limits).map(|s| match s {
            Status::Complete((v, n)) => Status::Complete((own(v), n)),
            Status::Partial => Status::Partial,
        })
    }

    /// Every strict prefix of `bytes` is `Partial` (for a value) or `Partial` or the same
    /// error; `bytes` gives `expected`, with all of `bytes` consumed; `bytes` with another
    /// value behind it gives the same, and the next value is still there.
    fn assert_every_split(bytes: &[u8], limits: &Limits, expected: Result<Own, RespError>) {
        for cut in 0..bytes.len() {
            let got = parsed(&bytes[..cut], limits);
            let fine = match &expected {
                Ok(_) => got == Ok(Status::Partial),
                Err(e) => got == Ok(Status::Partial) || got == Err(*e),
            };
            assert!(
                fine,
                "prefix {:?} of {:?}: got {got:?}, expected Partial",
                String::from_utf8_lossy(&bytes[..cut]),
                String::from_utf8_lossy(bytes)
            );
        }
        let want = expected.clone().map(|v| Status::Complete((v, bytes.len())));
        assert_eq!(
            parsed(bytes, limits),
            want,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        let mut two = bytes.to_vec();
        two.extend_from_slice(b"+NEXT\r\n");
        assert_eq!(parsed(&two, limits), want, "followed by a value");
        if expected.is_ok() {
            assert_eq!(
                parsed(&two[bytes.len()..], limits),
                Ok(Status::Complete((simple("NEXT"), 7)))
            );
        }
    }

    /// `bytes` is the shortest input that decides `err`: every strict prefix is `Partial`.
    fn assert_decided_by_last_byte(bytes: &[u8], limits: &Limits, err: RespError) {
        for cut in 0..bytes.len() {
            assert_eq!(
                parsed(&bytes[..cut], limits),
                Ok(Status::Partial),
                "prefix of {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(parsed(bytes, limits), Err(err));
    }

    fn resp2_values() -> Vec<(&'static [u8], Own)> {
        vec![
            (b"+OK\r\n", simple("OK")),
            (b"+PONG\r\n", simple("PONG")),
            (b"+\r\n", simple("")),
            (b"+\xff\x00\x7f\r\n", Own::Simple(b"\xff\x00\x7f".to_vec())),
            (
                b"-ERR unknown command 'FOO', with args beginning with: \r\n",
                Own::Error(b"ERR unknown command 'FOO', with args beginning with: ".to_vec()),
            ),
            (
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                Own::Error(
                    b"WRONGTYPE Operation against a key holding the wrong kind of value".to_vec(),
                ),
            ),
            (b":0\r\n", Own::Int(0)),
            (b":1\r\n", Own::Int(1)),
            (b":-1\r\n", Own::Int(-1)),
            (b":+7\r\n", Own::Int(7)),
            (b":007\r\n", Own::Int(7)),
            (b":-0\r\n", Own::Int(0)),
            (b":9223372036854775807\r\n", Own::Int(i64::MAX)),
            (b":-9223372036854775808\r\n", Own::Int(i64::MIN)),
            (b"$0\r\n\r\n", bulk(b"")),
            (b"$5\r\nhello\r\n", bulk(b"hello")),
            (b"$4\r\n\r\n\r\n\r\n", bulk(b"\r\n\r\n")),
            (b"$3\r\n\x00\xff\n\r\n", bulk(b"\x00\xff\n")),
            (b"$-1\r\n", Own::Null),
            (b"*-1\r\n", Own::Null),
            (b"*0\r\n", Own::Array(vec![])),
            (
                b"*2\r\n$3\r\nfoo\r\n:1\r\n",
                Own::Array(vec![bulk(b"foo"), Own::Int(1)]),
            ),
            (
                b"*5\r\n+OK\r\n-ERR x\r\n:3\r\n$-1\r\n*-1\r\n",
                Own::Array(vec![
                    simple("OK"),
                    Own::Error(b"ERR x".to_vec()),
                    Own::Int(3),
                    Own::Null,
                    Own::Null,
                ]),
            ),
            (
                b"*3\r\n*1\r\n+a\r\n*0\r\n*2\r\n*1\r\n:1\r\n$1\r\nb\r\n",
                Own::Array(vec![
                    Own::Array(vec![simple("a")]),
                    Own::Array(vec![]),
                    Own::Array(vec![Own::Array(vec![Own::Int(1)]), bulk(b"b")]),
                ]),
            ),
            // HGETALL in RESP2: a flat array of fields and values.
            (
                b"*4\r\n$6\r\ns/temp\r\n$4\r\n21.5\r\n$5\r\ns/hum\r\n$2\r\n40\r\n",
                Own::Array(vec![
                    bulk(b"s/temp"),
                    bulk(b"21.5"),
                    bulk(b"s/hum"),
                    bulk(b"40"),
                ]),
            ),
        ]
    }

    fn resp3_values() -> Vec<(&'static [u8], Own)> {
        vec![
            (b"_\r\n", Own::Null),
            (b"#t\r\n", Own::Bool(true)),
            (b"#f\r\n", Own::Bool(false)),
            (b",1.5\r\n", Own::Double(b"1.5".to_vec())),
            (b",10\r\n", Own::Double(b"10".to_vec())),
            (b",-1.23e-10\r\n", Own::Double(b"-1.23e-10".to_vec())),
            (b",inf\r\n", Own::Double(b"inf".to_vec())),
            (b",-inf\r\n", Own::Double(b"-inf".to_vec())),
            (b",nan\r\n", Own::Double(b"nan".to_vec())),
            (
                b"(3492890328409238509324850943850943825024385\r\n",
                Own::Big(b"3492890328409238509324850943850943825024385".to_vec()),
            ),
            (b"(-1\r\n", Own::Big(b"-1".to_vec())),
            (
                b"!21\r\nSYNTAX invalid syntax\r\n",
                Own::Error(b"SYNTAX invalid syntax".to_vec()),
            ),
            (
                b"=15\r\ntxt:Some string\r\n",
                Own::Verbatim(b"txt".to_vec(), b"Some string".to_vec()),
            ),
            (
                b"=4\r\nmkd:\r\n",
                Own::Verbatim(b"mkd".to_vec(), b"".to_vec()),
            ),
            (
                b"~2\r\n+a\r\n+b\r\n",
                Own::Set(vec![simple("a"), simple("b")]),
            ),
            (b"~0\r\n", Own::Set(vec![])),
            (
                b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
                Own::Map(vec![
                    simple("first"),
                    Own::Int(1),
                    simple("second"),
                    Own::Int(2),
                ]),
            ),
            (b"%0\r\n", Own::Map(vec![])),
            (
                b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
                Own::Push(vec![bulk(b"message"), bulk(b"news"), bulk(b"hi")]),
            ),
            // The reply to HELLO 3.
            (
                b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n\
                  $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
                  $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
                Own::Map(vec![
                    bulk(b"server"),
                    bulk(b"redis"),
                    bulk(b"version"),
                    bulk(b"7.2.4"),
                    bulk(b"proto"),
                    Own::Int(3),
                    bulk(b"id"),
                    Own::Int(5),
                    bulk(b"mode"),
                    bulk(b"standalone"),
                    bulk(b"role"),
                    bulk(b"master"),
                    bulk(b"modules"),
                    Own::Array(vec![]),
                ]),
            ),
            (
                b"*2\r\n%1\r\n#t\r\n_\r\n~1\r\n,0\r\n",
                Own::Array(vec![
                    Own::Map(vec![Own::Bool(true), Own::Null]),
                    Own::Set(vec![Own::Double(b"0".to_vec())]),
                ]),
            ),
        ]
    }

    #[test]
    fn resp2_values_at_every_split() {
        for (bytes, want) in resp2_values() {
            assert_every_split(bytes, &R2, Ok(want.clone()));
            // RESP2 is a part of RESP3.
            assert_every_split(bytes, &R3, Ok(want));
        }
    }

    #[test]
    fn resp3_values_at_every_split() {
        for (bytes, want) in resp3_values() {
            assert_every_split(bytes, &R3, Ok(want));
        }
    }

    #[test]
    fn resp3_types_are_refused_on_a_resp2_connection() {
        for (bytes, _) in resp3_values() {
            let first = bytes[0];
            if is_resp3(first) {
                assert_decided_by_last_byte(&bytes[..1], &R2, RespError::UnexpectedResp3(first));
            } else {
                assert!(matches!(
                    parse(bytes, &R2),
                    Err(RespError::UnexpectedResp3(_))
                ));
            }
        }
        // Also inside an array, at the element's type byte.
        assert_every_split(
            b"*2\r\n:1\r\n#t\r\n",
            &R2,
            Err(RespError::UnexpectedResp3(b'#')),
        );
    }

    /// One index per variant: the match fails to compile when a variant is added, and the
    /// table test below must then cover it.
    fn variant(e: RespError) -> usize {
        match e {
            RespError::InvalidType(_) => 0,
            RespError::UnexpectedResp3(_) => 1,
            RespError::InvalidLineEnd => 2,
            RespError::InvalidLength => 3,
            RespError::NegativeLength => 4,
            RespError::InvalidInteger => 5,
            RespError::IntegerOverflow => 6,
            RespError::InvalidBoolean => 7,
            RespError::InvalidNull => 8,
            RespError::InvalidDouble => 9,
            RespError::InvalidVerbatim => 10,
            RespError::MissingBulkCrlf => 11,
            RespError::LineTooLong => 12,
            RespError::BulkTooLong => 13,
            RespError::ArrayTooLong => 14,
            RespError::TooDeep => 15,
            RespError::ValueTooLong => 16,
        }
    }
    const VARIANTS: usize = 17;

    /// Malformed input, each decided by its last byte.
    fn malformed() -> Vec<(&'static [u8], Limits, RespError)> {
        use RespError::*;
        vec![
            (b"?", R2, InvalidType(b'?')),
            (b"H", R2, InvalidType(b'H')),
            (b"\r", R2, InvalidType(b'\r')),
            (b"|", R3, InvalidType(b'|')),
            (b"*2\r\n:1\r\nx", R2, InvalidType(b'x')),
            (b"_", R2, UnexpectedResp3(b'_')),
            (b">", R2, UnexpectedResp3(b'>')),
            (b"%", R2, UnexpectedResp3(b'%')),
            (b"+OK\rX", R2, InvalidLineEnd),
            (b"+OK\n", R2, InvalidLineEnd),
            (b"+O\n", R2, InvalidLineEnd),
            (b"-ERR\r\r", R2, InvalidLineEnd),
            (b":1\r\r", R2, InvalidLineEnd),
            (b"$1\r\r", R2, InvalidLineEnd),
            (b"$-1\rx", R2, InvalidLineEnd),
            (b"*1\r ", R2, InvalidLineEnd),
            (b"_\rx", R3, InvalidLineEnd),
            (b"#t\r\r", R3, InvalidLineEnd),
            (b"$x", R2, InvalidLength),
            (b"$\r", R2, InvalidLength),
            (b"$+", R2, InvalidLength),
            (b"$ ", R2, InvalidLength),
            (b"$1x", R2, InvalidLength),
            (b"$1\n", R2, InvalidLength),
            (b"$?", R2, InvalidLength),
            (b"$-x", R2, InvalidLength),
            (b"$-1x", R2, InvalidLength),
            (b"*x", R2, InvalidLength),
            (b"*?", R2, InvalidLength),
            (b"%\r", R3, InvalidLength),
            (b"$-2", R2, NegativeLength),
            (b"$-0", R2, NegativeLength),
            (b"$-10", R2, NegativeLength),
            (b"*-5", R2, NegativeLength),
            (b"*-12", R2, NegativeLength),
            (b">-1", R3, NegativeLength),
            (b"%-1", R3, NegativeLength),
            (b"~-1", R3, NegativeLength),
            (b"!-1", R3, NegativeLength),
            (b"=-1", R3, NegativeLength),
            (b":\r\n", R2, InvalidInteger),
            (b":abc\r\n", R2, InvalidInteger),
            (b":-\r\n", R2, InvalidInteger),
            (b":+\r\n", R2, InvalidInteger),
            (b":1.5\r\n", R2, InvalidInteger),
            (b": 1\r\n", R2, InvalidInteger),
            (b":--1\r\n", R2, InvalidInteger),
            (b"(\r\n", R3, InvalidInteger),
            (b"(12a\r\n", R3, InvalidInteger),
            (b":9223372036854775808\r\n", R2, IntegerOverflow),
            (b":-9223372036854775809\r\n", R2, IntegerOverflow),
            (b":99999999999999999999999\r\n", R2, IntegerOverflow),
            (b"#x", R3, InvalidBoolean),
            (b"#\r", R3, InvalidBoolean),
            (b"#tt", R3, InvalidBoolean),
            (b"_x", R3, InvalidNull),
            (b"_ ", R3, InvalidNull),
            (b",\r\n", R3, InvalidDouble),
            (b",abc\r\n", R3, InvalidDouble),
            (b",1,5\r\n", R3, InvalidDouble),
            (b",infinity\r\n", R3, InvalidDouble),
            (b"=3\r\n", R3, InvalidVerbatim),
            (b"=0\r\n", R3, InvalidVerbatim),
            (b"=8\r\ntxt+", R3, InvalidVerbatim),
            (b"$3\r\nabcd", R2, MissingBulkCrlf),
            (b"$3\r\nabc\n", R2, MissingBulkCrlf),
            (b"$3\r\nabc\rX", R2, MissingBulkCrlf),
            (b"$0\r\nX", R2, MissingBulkCrlf),
            (b"!1\r\nab", R3, MissingBulkCrlf),
            (b"*2\r\n$1\r\na\r\n$1\r\nbc", R2, MissingBulkCrlf),
        ]
    }

    #[test]
    fn every_malformed_input_is_decided_by_its_last_byte() {
        for (bytes, limits, err) in malformed() {
            assert_decided_by_last_byte(bytes, &limits, err);
            assert_every_split(bytes, &limits, Err(err));
        }
    }

    #[test]
    fn every_error_variant_is_tested() {
        let mut seen = [false; VARIANTS];
        let mut errors: Vec<RespError> = malformed().into_iter().map(|(_, _, e)| e).collect();
        errors.extend(limit_cases().into_iter().map(|(_, _, e)| e));
        for e in errors {
            seen[variant(e)] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn errors_are_small_and_described() {
        assert!(core::mem::size_of::<RespError>() <= 2);
        let mut texts: Vec<&str> = malformed()
            .into_iter()
            .map(|(_, _, e)| e)
            .chain(limit_cases().into_iter().map(|(_, _, e)| e))
            .map(RespError::as_str)
            .collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), VARIANTS, "one description per variant");
        assert_eq!(
            RespError::InvalidType(b'?').to_string(),
            "invalid type byte 0x3f"
        );
        assert_eq!(RespError::TooDeep.to_string(), "nested too deep");
    }

    fn small(max_value_len: usize) -> Limits {
        Limits {
            max_value_len,
            ..Limits::DEFAULT
        }
    }

    fn lines(max_line_len: usize) -> Limits {
        Limits {
            max_line_len,
            ..Limits::DEFAULT
        }
    }

    /// Limits passed, each decided by its last byte: before the CRLF of a length, before
    /// the payload of a bulk string, before the CRLF of a line.
    fn limit_cases() -> Vec<(Vec<u8>, Limits, RespError)> {
        use RespError::*;
        let mut deep = b"*1\r\n".repeat(8);
        deep.extend_from_slice(b"*1\r\n");
        vec![
            // max_bulk_len is 1,114,112: the seventh digit passes it.
            (b"$1114113".to_vec(), R2, BulkTooLong),
            (b"$9999999".to_vec(), R2, BulkTooLong),
            (b"!2000000".to_vec(), R3, BulkTooLong),
            (b"=2000000".to_vec(), R3, BulkTooLong),
            (b"*1\r\n$9999999".to_vec(), R2, BulkTooLong),
            (
                b"$99999999999999999999999".to_vec()[..8].to_vec(),
                R2,
                BulkTooLong,
            ),
            // max_array_len is 65,536; a map entry counts two.
            (b"*65537".to_vec(), R2, ArrayTooLong),
            (b">65537".to_vec(), R3, ArrayTooLong),
            (b"~65537".to_vec(), R3, ArrayTooLong),
            (b"%32769".to_vec(), R3, ArrayTooLong),
            (b"*1\r\n*99999".to_vec(), R2, ArrayTooLong),
            // max_depth is 8.
            (deep, R2, TooDeep),
            // max_line_len (here 64), also for the digits of a length.
            ([&b"+"[..], &[b'a'; 65]].concat(), lines(64), LineTooLong),
            ([&b"-"[..], &[b'a'; 65]].concat(), lines(64), LineTooLong),
            ([&b":"[..], &[b'1'; 65]].concat(), lines(64), LineTooLong),
            ([&b"$"[..], &[b'0'; 65]].concat(), lines(64), LineTooLong),
            ([&b"*"[..], &[b'0'; 65]].concat(), lines(64), LineTooLong),
            (
                [&b","[..], &[b'1'; 65]].concat(),
                Limits {
                    resp3: true,
                    ..lines(64)
                },
                LineTooLong,
            ),
            ([&b"+"[..], &[b'a'; 1]].concat(), lines(0), LineTooLong),
            // The header alone says the value cannot fit.
            (b"$60\r\n".to_vec(), small(64), ValueTooLong),
            (
                b"*2\r\n$1\r\na\r\n$50\r\n".to_vec(),
                small(64),
                ValueTooLong,
            ),
            (
                b"=60\r\n".to_vec(),
                Limits {
                    resp3: true,
                    ..small(64)
                },
                ValueTooLong,
            ),
            // No whole value in the first max_value_len bytes.
            ([&b"+"[..], &[b'a'; 63]].concat(), small(64), ValueTooLong),
            (
                [&b"*99\r\n"[..], &b":1\r\n".repeat(14), b":12"].concat(),
                small(64),
                ValueTooLong,
            ),
            (b"+".to_vec(), small(1), ValueTooLong),
        ]
    }

    #[test]
    fn limits_fail_before_the_data_arrives() {
        for (bytes, limits, err) in limit_cases() {
            assert_decided_by_last_byte(&bytes, &limits, err);
            assert_every_split(&bytes, &limits, Err(err));
        }
    }

    #[test]
    fn values_at_the_limits_parse() {
        let max = R2.max_bulk_len;
        let mut big = format!("${max}\r\n").into_bytes();
        big.resize(big.len() + max, b'x');
        assert_eq!(parse(&big, &R2), Ok(Status::Partial));
        big.extend_from_slice(b"\r\n");
        let Ok(Status::Complete((Value::Bulk(b), n))) = parse(&big, &R2) else {
            panic!("a bulk string of max_bulk_len");
        };
        assert_eq!((b.len(), n), (max, big.len()));

        // The default max_line_len is 8 KiB: its 8,193rd byte fails at once.
        let line = [&b"+"[..], &[b'a'; 8192], b"\r\n"].concat();
        assert!(parse(&line, &R2).is_ok_and(|s| s.is_complete()));
        assert_eq!(parse(&line[..8193], &R2), Ok(Status::Partial));
        let longer = [&line[..8193], b"a"].concat();
        assert_eq!(parse(&longer, &R2), Err(RespError::LineTooLong));
        assert_eq!(
            parse(b"+\r\n", &lines(0)),
            Ok(Status::Complete((Value::Simple(b""), 3)))
        );
        let digits = [&b"$"[..], &[b'0'; 8191], b"5\r\nhello\r\n"].concat();
        assert_eq!(
            parsed(&digits, &R2),
            Ok(Status::Complete((bulk(b"hello"), digits.len())))
        );

        let count = b"*65536\r\n";
        assert_eq!(parse(count, &R2), Ok(Status::Partial));
        let many = [&count[..], &b":1\r\n".repeat(65536)].concat();
        assert!(parse(&many, &R2).is_ok_and(|s| s.is_complete()));

        // A value of exactly max_value_len bytes.
        let exact = [&b"+"[..], &[b'a'; 61], b"\r\n"].concat();
        assert_eq!(exact.len(), 64);
        assert_every_split(&exact, &small(64), Ok(Own::Simple(vec![b'a'; 61])));
        let bulk60 = [&b"$57\r\n"[..], &[b'b'; 57], b"\r\n"].concat();
        assert_eq!(bulk60.len(), 64);
        assert_every_split(&bulk60, &small(64), Ok(Own::Bulk(vec![b'b'; 57])));
        // Nothing is ever too long for an empty buffer.
        assert_eq!(parse(b"", &small(0)), Ok(Status::Partial));
        assert_eq!(parse(b"+", &small(0)), Err(RespError::ValueTooLong));
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = b"*1\r\n".repeat(depth);
        bytes.extend_from_slice(b":7\r\n");
        bytes
    }

    fn nested_own(depth: usize) -> Own {
        (0..depth).fold(Own::Int(7), |inner, _| Own::Array(vec![inner]))
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        assert_every_split(&nested(8), &R2, Ok(nested_own(8)));
        assert_every_split(&nested(9), &R2, Err(RespError::TooDeep));
        // A megabyte of `*1\r\n` fails at the ninth header, and no stack grows with it.
        let flood = b"*1\r\n".repeat(1 << 18);
        assert_eq!(parse(&flood, &R2), Err(RespError::TooDeep));
        // max_depth is capped at MAX_DEPTH, whatever the caller asks.
        let unbounded = Limits {
            max_depth: usize::MAX,
            ..Limits::DEFAULT
        };
        assert_every_split(&nested(MAX_DEPTH), &unbounded, Ok(nested_own(MAX_DEPTH)));
        assert_eq!(
            parsed(&nested(MAX_DEPTH + 1), &unbounded),
            Err(RespError::TooDeep)
        );
        assert_eq!(parse(&flood, &unbounded), Err(RespError::TooDeep));
        // max_depth 0: scalars and nulls only.
        let flat = Limits {
            max_depth: 0,
            ..Limits::DEFAULT
        };
        assert_eq!(parsed(b"*0\r\n", &flat), Err(RespError::TooDeep));
        assert_eq!(
            parsed(b"*-1\r\n", &flat),
            Ok(Status::Complete((Own::Null, 5)))
        );
        assert_eq!(
            parsed(b":1\r\n", &flat),
            Ok(Status::Complete((Own::Int(1), 4)))
        );
        // Empty aggregates count as a level too; siblings do not add up.
        let one = Limits {
            max_depth: 1,
            ..Limits::DEFAULT
        };
        assert_eq!(parsed(b"*1\r\n*0\r\n", &one), Err(RespError::TooDeep));
        let siblings = [&b"*3\r\n"[..], b"*0\r\n", b"*0\r\n", b"*0\r\n"].concat();
        let two = Limits {
            max_depth: 2,
            ..Limits::DEFAULT
        };
        assert_every_split(&siblings, &two, Ok(Own::Array(vec![Own::Array(vec![]); 3])));
        let maps = b"%1\r\n%1\r\n%1\r\n:1\r\n:2\r\n:3\r\n:4\r\n";
        let three = Limits {
            max_depth: 3,
            resp3: true,
            ..Limits::DEFAULT
        };
        assert!(parse(maps, &three).is_ok_and(|s| s.is_complete()));
        assert_eq!(
            parse(
                maps,
                &Limits {
                    max_depth: 2,
                    ..three
                }
            ),
            Err(RespError::TooDeep)
        );
    }

    /// The bytes Redis sends for a publish on `emberws:s/temp` to a `PSUBSCRIBE emberws:*`.
    fn pmessage(payload: &[u8]) -> Vec<u8> {
        let mut bytes =
            b"*4\r\n$8\r\npmessage\r\n$9\r\nemberws:*\r\n$14\r\nemberws:s/temp\r\n".to_vec();
        bytes.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(b"\r\n");
        bytes
    }

    #[test]
    fn a_pmessage_decodes_to_its_parts() {
        let payload = br#"{"topic":"s/temp","data":21.5,"id":17}"#;
        let bytes = pmessage(payload);
        assert_every_split(
            &bytes,
            &R2,
            Ok(Own::Array(vec![
                bulk(b"pmessage"),
                bulk(b"emberws:*"),
                bulk(b"emberws:s/temp"),
                bulk(payload),
            ])),
        );
        let Ok(Status::Complete((value, used))) = parse(&bytes, &R2) else {
            panic!("a whole pmessage");
        };
        assert_eq!(used, bytes.len());
        let Value::Array(items) = value else {
            panic!("an array");
        };
        assert_eq!(items.len(), 4);
        let parts: Vec<Value<'_>> = items.iter().collect();
        assert_eq!(
            parts,
            [
                Value::Bulk(b"pmessage"),
                Value::Bulk(b"emberws:*"),
                Value::Bulk(b"emberws:s/temp"),
                Value::Bulk(payload),
            ]
        );
        // The payload is borrowed from the read buffer, not copied.
        let Value::Bulk(got) = parts[3] else {
            panic!("a bulk payload");
        };
        assert_eq!(
            got.as_ptr(),
            bytes[bytes.len() - 2 - payload.len()..].as_ptr()
        );
        assert_eq!(
            PubSub::from_value(&value),
            Some(PubSub::PMessage {
                pattern: b"emberws:*",
                channel: b"emberws:s/temp",
                payload,
            })
        );
        assert_eq!(items.as_bytes(), &bytes[4..]);

        // The same after HELLO 3, as a push.
        let mut pushed = bytes.clone();
        pushed[0] = b'>';
        let Ok(Status::Complete((push, _))) = parse(&pushed, &R3) else {
            panic!("a whole push");
        };
        assert!(matches!(push, Value::Push(_)));
        assert_eq!(
            PubSub::from_value(&push),
            PubSub::from_value(&value),
            "same event"
        );
        assert_eq!(parse(&pushed, &R2), Err(RespError::UnexpectedResp3(b'>')));
    }

    #[test]
    fn a_large_pmessage_waits_without_rescanning_its_payload() {
        let payload = vec![b'z'; 1 << 20];
        let bytes = pmessage(&payload);
        // Every prefix after the payload's header is Partial: the header said how much to
        // wait for, and the payload itself is never looked at.
        let header_end = bytes.len() - payload.len() - 2;
        for cut in [header_end, header_end + 1, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(parse(&bytes[..cut], &R2), Ok(Status::Partial), "{cut}");
        }
        let Ok(Status::Complete((value, used))) = parse(&bytes, &R2) else {
            panic!("a whole pmessage");
        };
        assert_eq!(used, bytes.len());
        assert!(matches!(
            PubSub::from_value(&value),
            Some(PubSub::PMessage { payload: p, .. }) if p.len() == 1 << 20
        ));
    }

    #[test]
    fn pipelined_values_back_to_back() {
        let values: Vec<(&[u8], Own)> = resp2_values().into_iter().chain(resp3_values()).collect();
        let stream: Vec<u8> = values.iter().flat_map(|(b, _)| b.iter().copied()).collect();
        // All at once.
        let mut at = 0;
        for (bytes, want) in &values {
            assert_eq!(
                parsed(&stream[at..], &R3),
                Ok(Status::Complete((want.clone(), bytes.len())))
            );
            at += bytes.len();
        }
        assert_eq!(parse(&stream[at..], &R3), Ok(Status::Partial));
        // As a reader sees it: chunks of every size from 1 to 13 bytes, parsing after each.
        for chunk in 1..=13 {
            let mut got = Vec::new();
            let mut start = 0;
            let mut end = 0;
            while end < stream.len() {
                end = (end + chunk).min(stream.len());
                while let Ok(Status::Complete((v, n))) = parse(&stream[start..end], &R3) {
                    got.push(own(v));
                    start += n;
                }
            }
            assert_eq!(start, stream.len(), "chunk {chunk}");
            let want: Vec<Own> = values.iter().map(|(_, v)| v.clone()).collect();
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn pairs_of_a_map_and_of_a_flat_array() {
        let hgetall = b"*4\r\n$6\r\ns/temp\r\n$4\r\n21.5\r\n$5\r\ns/hum\r\n$2\r\n40\r\n";
        let Ok(Status::Complete((Value::Array(items), _))) = parse(hgetall, &R2) else {
            panic!("an array");
        };
        let pairs: Vec<_> = items.pairs().collect();
        assert_eq!(items.pairs().len(), 2);
        assert_eq!(
            pairs,
            [
                (Value::Bulk(b"s/temp"), Value::Bulk(b"21.5")),
                (Value::Bulk(b"s/hum"), Value::Bulk(b"40")),
            ]
        );
        let map = b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n";
        let Ok(Status::Complete((Value::Map(m), _))) = parse(map, &R3) else {
            panic!("a map");
        };
        assert_eq!(m.len(), 4);
        let keys: Vec<_> = m.pairs().map(|(k, _)| k).collect();
        assert_eq!(keys, [Value::Simple(b"a"), Value::Simple(b"b")]);
        let odd = b"*3\r\n:1\r\n:2\r\n:3\r\n";
        let Ok(Status::Complete((Value::Array(o), _))) = parse(odd, &R2) else {
            panic!("an array");
        };
        assert_eq!(o.pairs().count(), 1);
        // Iterators are fused and exact.
        let mut it = o.iter();
        assert_eq!(it.len(), 3);
        assert_eq!(it.nth(2), Some(Value::Integer(3)));
        assert_eq!((it.next(), it.next(), it.len()), (None, None, 0));
        assert_eq!((&o).into_iter().count(), 3);
        assert_eq!(o.into_iter().count(), 3);
        assert_eq!(
            format!("{:?}", Value::Array(o)),
            "Array([Integer(1), Integer(2), Integer(3)])"
        );
    }

    #[test]
    fn commands_encode_to_resp2_arrays_of_bulk_strings() {
        let table: &[(&[&[u8]], &[u8])] = &[
            (&[b"PING"], b"*1\r\n$4\r\nPING\r\n"),
            (
                &[b"PUBLISH", b"emberws:s/temp", b"21.5"],
                b"*3\r\n$7\r\nPUBLISH\r\n$14\r\nemberws:s/temp\r\n$4\r\n21.5\r\n",
            ),
            (
                &[b"PSUBSCRIBE", b"emberws:*"],
                b"*2\r\n$10\r\nPSUBSCRIBE\r\n$9\r\nemberws:*\r\n",
            ),
            (
                &[b"HSET", b"emberws:retained", b"s/temp", b"a\r\nb"],
                b"*4\r\n$4\r\nHSET\r\n$16\r\nemberws:retained\r\n$6\r\ns/temp\r\n$4\r\na\r\nb\r\n",
            ),
            (&[b"HDEL", b""], b"*2\r\n$4\r\nHDEL\r\n$0\r\n\r\n"),
            (&[], b"*0\r\n"),
        ];
        for &(args, want) in table {
            let mut out = b"queued".to_vec();
            encode_command(&mut out, args);
            assert_eq!(&out[..6], b"queued", "appends");
            assert_eq!(&out[6..], want);
            assert_eq!(command_len(args), want.len());
        }
    }

    #[test]
    fn encode_parse_round_trip_at_every_split() {
        let long = vec![0xA5u8; 1000];
        let sizes: Vec<Vec<u8>> = [0, 1, 9, 10, 99, 100, 999, 1000]
            .iter()
            .map(|&n| long[..n].to_vec())
            .collect();
        let mut commands: Vec<Vec<&[u8]>> = vec![vec![], vec![b"PING"]];
        commands.push(sizes.iter().map(Vec::as_slice).collect());
        commands.push(vec![b"\r\n"; 12]);
        commands.push(vec![b"$3\r\n*1\r\n"; 3]);
        for args in commands {
            let mut out = Vec::new();
            encode_command(&mut out, &args);
            assert_eq!(out.len(), command_len(&args));
            let want = Own::Array(args.iter().map(|a| bulk(a)).collect());
            assert_every_split(&out, &R2, Ok(want));
        }
    }

    #[test]
    fn decimal_digits_at_their_boundaries() {
        let table: &[(usize, &[u8])] = &[
            (0, b"0"),
            (9, b"9"),
            (10, b"10"),
            (65_536, b"65536"),
            (usize::MAX, b"18446744073709551615"),
        ];
        for &(n, want) in table {
            let mut digits = [0u8; 20];
            let at = decimal(n, &mut digits);
            assert_eq!(&digits[at..], want);
            assert_eq!(header_len(n), want.len() + 3);
        }
    }

    /// Every first byte followed by a spread of second bytes: never panics, a prefix decides
    /// what every longer input decides.
    #[test]
    fn every_first_byte_never_panics_and_agrees() {
        let rests: [&[u8]; 8] = [
            b"",
            b"\r\n",
            b"1\r\n:1\r\n",
            b"-1\r\n",
            b"3\r\nabc\r\n",
            b"t\r\n",
            b"2\r\n+a\r\n$1\r\nb\r\n",
            b"\xff\r\n",
        ];
        for b0 in 0..=u8::MAX {
            for rest in rests {
                for limits in [R2, R3, small(6)] {
                    let buf = [&[b0][..], rest, b"\r\n"].concat();
                    let full = parse(&buf, &limits);
                    for cut in 0..buf.len() {
                        match parse(&buf[..cut], &limits) {
                            Ok(Status::Partial) => {}
                            Ok(Status::Complete((v, n))) => {
                                assert!(n <= cut);
                                assert_eq!(full, Ok(Status::Complete((v, n))));
                            }
                            Err(e) => assert_eq!(full, Err(e), "{:02x?}", &buf[..cut]),
                        }
                    }
                    if let Ok(Status::Complete((v, n))) = full {
                        assert!(n > 0 && n <= buf.len());
                        // Reading it through never fails either.
                        let _ = own(v);
                    }
                }
            }
        }
    }
}
