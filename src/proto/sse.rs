//! Server-Sent Events: one event of a `text/event-stream` body, the `retry:` field and the
//! keep-alive comment, as the WHATWG HTML standard's parser reads them ("Server-sent events",
//! §9.2.6 "Interpreting an event stream").
//!
//! - **In:** the text of a message and an optional [`EventId`].
//! - **Out:** the event's bytes appended to a caller-owned `Vec<u8>`, and their exact length
//!   beforehand ([`encoded_len`]) so a caller checks its bound before writing anything.
//! - **Never:** allocates beyond that `Vec`'s growth, or writes bytes a conforming parser reads
//!   as anything but the given data and id (an id it cannot carry is refused by
//!   [`EventId::new`]).
//!
//! An event is `id: ID\n` (only with an id), one `data: LINE\n` per line of the text, then an
//! empty line, which dispatches it. The parser joins the `data` lines with LF and drops the
//! final one, so the text comes back whole, each line break read as LF.

/// The comment a stream is sent as a keep-alive. §9.2.6: a line that starts with a colon is
/// ignored, and the empty line after it dispatches nothing (the data buffer is empty).
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

const ID_FIELD: &[u8] = b"id: ";
const DATA_FIELD: &[u8] = b"data: ";

/// An event id the stream can carry: no CR or LF, which would end the field, and no NUL, for
/// which §9.2.6 has the parser ignore the whole `id` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventId<'a>(&'a str);

impl<'a> EventId<'a> {
    /// The id, if a stream can carry it. An empty id is valid: it resets the client's last
    /// event id (the `Last-Event-ID` it sends on reconnecting).
    pub fn new(id: &'a str) -> Option<Self> {
        let bad = id.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        (!bad).then_some(EventId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The lines of `text` as the stream's parser splits them (§9.2.6: a line ends at CRLF, a
/// lone CR or a lone LF). Empty text is one empty line; a text ending in a line break ends
/// with an empty line.
pub fn lines(text: &str) -> Lines<'_> {
    Lines { rest: Some(text) }
}

/// The iterator of [`lines`].
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        let Some(at) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') else {
            self.rest = None;
            return Some(rest);
        };
        let crlf = bytes.get(at) == Some(&b'\r') && bytes.get(at + 1) == Some(&b'\n');
        // `at` is an ASCII byte, so both cuts fall on character boundaries.
        self.rest = Some(rest.get(at + 1 + usize::from(crlf)..).unwrap_or_default());
        Some(rest.get(..at).unwrap_or_default())
    }
}

/// The bytes [`encode`] appends for this event.
pub fn encoded_len(id: Option<EventId<'_>>, text: &str) -> usize {
    let id_len = id.map_or(0, |id| ID_FIELD.len() + id.0.len() + 1);
    let data: usize = lines(text)
        .map(|line| DATA_FIELD.len() + line.len() + 1)
        .sum();
    id_len + data + 1
}

/// Appends one event: its `id` line if it has one, a `data` line per line of `text`, and the
/// empty line that dispatches it. Exactly [`encoded_len`] bytes.
pub fn encode(out: &mut Vec<u8>, id: Option<EventId<'_>>, text: &str) {
    out.reserve(encoded_len(id, text));
    if let Some(id) = id {
        out.extend_from_slice(ID_FIELD);
        out.extend_from_slice(id.0.as_bytes());
        out.push(b'\n');
    }
    for line in lines(text) {
        out.extend_from_slice(DATA_FIELD);
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends `retry: MS` and an empty line: the client waits this many milliseconds before it
/// reconnects (§9.2.6 "retry": ASCII digits only).
pub fn retry(out: &mut Vec<u8>, ms: u64) {
    out.extend_from_slice(b"retry: ");
    super::response::push_decimal(out, ms);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, text: &str) -> String {
        let id = id.map(|id| EventId::new(id).unwrap());
        let mut out = Vec::new();
        encode(&mut out, id, text);
        assert_eq!(out.len(), encoded_len(id, text), "{text:?}");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_data_line_per_line_of_text() {
        assert_eq!(event(None, "hello"), "data: hello\n\n");
        assert_eq!(event(None, ""), "data: \n\n");
        assert_eq!(event(None, "a\nb"), "data: a\ndata: b\n\n");
        assert_eq!(
            event(None, "a\r\nb\rc\n"),
            "data: a\ndata: b\ndata: c\ndata: \n\n"
        );
        assert_eq!(
            event(None, "\r\r\n\n"),
            "data: \ndata: \ndata: \ndata: \n\n"
        );
        // A leading space is kept: the parser removes only the one after the colon.
        assert_eq!(event(None, " x"), "data:  x\n\n");
        assert_eq!(event(None, "é\nü"), "data: é\ndata: ü\n\n");
    }

    #[test]
    fn the_id_goes_first() {
        assert_eq!(
            event(Some("3fa2c9e1-7"), "x"),
            "id: 3fa2c9e1-7\ndata: x\n\n"
        );
        assert_eq!(event(Some(""), "x"), "id: \ndata: x\n\n");
    }

    #[test]
    fn ids_with_a_line_break_or_nul_are_refused() {
        for bad in ["a\nb", "a\rb", "\n", "a\0", "\r\n"] {
            assert_eq!(EventId::new(bad), None, "{bad:?}");
        }
        assert_eq!(
            EventId::new("ok id: 1").map(|id| id.as_str()),
            Some("ok id: 1")
        );
    }

    #[test]
    fn lines_split_as_the_parser_does() {
        let split = |s| lines(s).collect::<Vec<_>>();
        assert_eq!(split(""), [""]);
        assert_eq!(split("a"), ["a"]);
        assert_eq!(split("a\r\n\r\nb"), ["a", "", "b"]);
        assert_eq!(split("\n\r"), ["", "", ""]);
        assert_eq!(split("a\r"), ["a", ""]);
    }

    #[test]
    fn retry_is_digits_and_an_empty_line() {
        let mut out = Vec::new();
        retry(&mut out, 2000);
        retry(&mut out, 0);
        retry(&mut out, u64::MAX);
        assert_eq!(
            out,
            b"retry: 2000\n\nretry: 0\n\nretry: 18446744073709551615\n\n"
        );
    }
}
