//! ① The HTTP/1.1 upgrade request: bytes → a [`Request`] view borrowed from them.
//!
//! - **In:** the bytes read so far and a caller-lent header table (`[Header::EMPTY; N]`).
//! - **Out:** [`Status::Partial`] until a whole head is buffered, then a strictly parsed
//!   [`Request`] view and the head's length; [`Request::validate_upgrade`] checks RFC 6455.
//! - **Never:** allocates, consumes bytes past the blank line (they are frame bytes), or
//!   accepts bare LF, obs-fold, white space before a colon, or CTLs in a value.

use base64::Engine as _;

use super::error::HandshakeError;
use super::Status;

/// One header line, borrowed from the request buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'b> {
    /// The name as sent (compare case-insensitively).
    pub name: &'b str,
    /// The value with surrounding optional white space trimmed.
    pub value: &'b [u8],
}

impl Header<'_> {
    /// An empty header, to fill a header table: `[Header::EMPTY; N]`.
    pub const EMPTY: Header<'static> = Header {
        name: "",
        value: b"",
    };
}

/// A parsed request head, borrowed from the buffer it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Request<'h, 'b> {
    /// The method token, e.g. `GET`.
    pub method: &'b str,
    /// The request target as sent: path and optional `?query`.
    pub target: &'b str,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// The header lines, in order.
    pub headers: &'h [Header<'b>],
}

/// The length of a valid `Sec-WebSocket-Key`: 16 bytes are 24 base64 characters.
const KEY_B64_LEN: usize = 24;

/// The decoded length of a valid `Sec-WebSocket-Key` (RFC 6455 §4.1: "a randomly selected
/// 16-byte value").
const KEY_LEN: usize = 16;

impl<'h, 'b> Request<'h, 'b> {
    /// The target up to `?`.
    pub fn path(&self) -> &'b str {
        let target: &'b str = self.target;
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The target after `?`, if any.
    pub fn query(&self) -> Option<&'b str> {
        let target: &'b str = self.target;
        target.split_once('?').map(|(_, query)| query)
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// True if the request asks for a WebSocket upgrade (`Upgrade` lists `websocket`).
    pub fn is_upgrade(&self) -> bool {
        // RFC 9110 §7.8: Upgrade is a comma-separated list and may span several lines.
        self.values("Upgrade")
            .any(|value| list_has_token(value, b"websocket"))
    }

    /// Checks every rule of RFC 6455 §4.2.1 and returns the `Sec-WebSocket-Key`.
    ///
    /// The rules are checked in a fixed order (method, version, `Host`, `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Version`, `Sec-WebSocket-Key`), so a request breaking
    /// several always gets the same answer.
    ///
    /// # Errors
    /// The first rule broken, as a [`HandshakeError`]. A duplicated `Host` is
    /// [`HandshakeError::Malformed`] (RFC 9112 §3.2).
    pub fn validate_upgrade(&self) -> Result<&'b [u8], HandshakeError> {
        // RFC 6455 §4.2.1 item 1: "An HTTP/1.1 or higher GET request"; methods are
        // case-sensitive (RFC 9110 §9.1).
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        // RFC 6455 §4.2.1 item 1: HTTP/1.1 or higher; the parser only admits 1.0 and 1.1.
        if self.version != 1 {
            return Err(HandshakeError::HttpVersion);
        }
        // RFC 6455 §4.2.1 item 2: a |Host| header field.
        // RFC 9112 §3.2: a server MUST answer 400 to more than one Host line.
        match self.values("Host").count() {
            0 => return Err(HandshakeError::MissingHost),
            1 => {}
            _ => return Err(HandshakeError::Malformed),
        }
        // RFC 6455 §4.2.1 item 3: |Upgrade| includes "websocket" (case-insensitive).
        if !self.is_upgrade() {
            return Err(HandshakeError::NotUpgrade);
        }
        // RFC 6455 §4.2.1 item 4: |Connection| includes the token "Upgrade"
        // (case-insensitive); other tokens such as keep-alive may sit beside it.
        if !self
            .values("Connection")
            .any(|value| list_has_token(value, b"upgrade"))
        {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // RFC 6455 §4.2.1 item 6: |Sec-WebSocket-Version| with a value of 13; §4.2.2 has us
        // answer anything else (missing included) with 426 and the version we speak.
        match self.single("Sec-WebSocket-Version") {
            Some(version) if trim_ows(version) == b"13" => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        // RFC 6455 §4.2.1 item 5: |Sec-WebSocket-Key|, base64 of exactly 16 bytes; §11.3.1
        // allows the field only once in a request.
        let key = self
            .single("Sec-WebSocket-Key")
            .map(trim_ows)
            .ok_or(HandshakeError::InvalidKey)?;
        if is_valid_key(key) {
            Ok(key)
        } else {
            Err(HandshakeError::InvalidKey)
        }
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's order.
    ///
    /// Every `Sec-WebSocket-Protocol` line counts (RFC 6455 §11.3.4 lets the client repeat
    /// it); items are trimmed, empty items and non-UTF-8 lines are skipped.
    pub fn protocols(&self) -> impl Iterator<Item = &'b str> + Clone + 'h {
        let headers: &'h [Header<'b>] = self.headers;
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
            .filter_map(|h| core::str::from_utf8(h.value).ok())
            .flat_map(|value| value.split(','))
            .map(|item| item.trim_matches(|c| c == ' ' || c == '\t'))
            .filter(|item| !item.is_empty())
    }

    /// The `Origin` header, if present and UTF-8.
    pub fn origin(&self) -> Option<&'b str> {
        self.header("Origin")
            .and_then(|value| core::str::from_utf8(value).ok())
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order.
    fn values(&self, name: &'static str) -> impl Iterator<Item = &'b [u8]> + 'h {
        let headers: &'h [Header<'b>] = self.headers;
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The value of the header named `name` if it occurs exactly once.
    fn single(&self, name: &'static str) -> Option<&'b [u8]> {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        }
    }
}

/// True if `key` is base64 (standard alphabet, canonical padding) of exactly 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes always encode to 24 characters with padding; checking first keeps the
    // decode inside a fixed stack buffer.
    if key.len() != KEY_B64_LEN {
        return false;
    }
    // 24 characters decode to at most 18 bytes: base64's own size check passes, and a
    // 24-character value without padding (18 bytes) is told apart by the length below.
    let mut decoded = [0u8; KEY_B64_LEN / 4 * 3];
    matches!(
        base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded),
        Ok(KEY_LEN)
    )
}

/// True if the comma-separated list `value` holds `token` (ASCII case-insensitive).
fn list_has_token(value: &[u8], token: &[u8]) -> bool {
    // RFC 9110 §5.6.1: list items are separated by commas with optional white space
    // around them.
    value
        .split(|&b| b == b',')
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
}

/// `bytes` without leading and trailing SP / HTAB (RFC 9110 §5.6.3 OWS).
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// RFC 9110 §5.6.2: `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
/// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A non-empty run of tchar, as `&str` (tchars are ASCII, so this never fails on a token).
fn token(bytes: &[u8]) -> Result<&str, HandshakeError> {
    if bytes.is_empty() || !bytes.iter().all(|&b| is_tchar(b)) {
        return Err(HandshakeError::Malformed);
    }
    core::str::from_utf8(bytes).map_err(|_| HandshakeError::Malformed)
}

/// Finds the end of a request head: the index just past the first `\r\n\r\n`.
///
/// `from` is where the previous call stopped looking, so a head arriving a byte at a time is
/// scanned once in all.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    // The terminator may straddle the previous end: its first three bytes can sit before
    // `from`, so the window search restarts three bytes back.
    let mut at = from.saturating_sub(3);
    // Horspool search for the 4-byte pattern: look at the last byte of the window and skip
    // by where that byte last occurs in the pattern's first three bytes ("\r\n\r").
    while let Some(&last) = buf.get(at.saturating_add(3)) {
        match last {
            b'\n' => {
                if buf.get(at..at.saturating_add(4)) == Some(b"\r\n\r\n") {
                    return Some(at.saturating_add(4));
                }
                // '\n' last occurs at pattern index 1: shift it under there.
                at = at.saturating_add(2);
            }
            // '\r' last occurs at pattern index 2.
            b'\r' => at = at.saturating_add(1),
            // Any other byte cannot be part of a match covering this position.
            _ => at = at.saturating_add(4),
        }
    }
    None
}

/// Parses a request head from `buf` into `headers`.
///
/// Returns the request and the head's length; bytes after it are the first frame bytes.
///
/// # Errors
/// [`HandshakeError::Malformed`], [`HandshakeError::TooManyHeaders`].
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
) -> Result<Status<(Request<'h, 'b>, usize)>, HandshakeError> {
    let Some(head_len) = find_head_end(buf, 0) else {
        return Ok(Status::Partial);
    };
    // Every line of the head, the last header line included, ends in CRLF; dropping the
    // final CRLF (the empty line) leaves lines that each end in "\r\n".
    let lines = buf
        .get(..head_len.saturating_sub(2))
        .ok_or(HandshakeError::Malformed)?;
    // Splitting on LF leaves one empty piece after the last line's LF: strip that LF first.
    let lines = lines.strip_suffix(b"\n").ok_or(HandshakeError::Malformed)?;
    let mut lines = lines.split(|&b| b == b'\n').map(|line| {
        // RFC 9112 §2.2: a bare LF could be accepted as a line terminator, but strict
        // CRLF-only parsing leaves no room for request smuggling between parsers.
        line.strip_suffix(b"\r").ok_or(HandshakeError::Malformed)
    });

    let request_line = lines.next().ok_or(HandshakeError::Malformed)??;
    let (method, target, version) = parse_request_line(request_line)?;

    let mut count = 0usize;
    {
        let mut slots = headers.iter_mut();
        for line in lines {
            let header = parse_header_line(line?)?;
            let slot = slots.next().ok_or(HandshakeError::TooManyHeaders)?;
            *slot = header;
            count = count.saturating_add(1);
        }
    }
    let headers: &'h [Header<'b>] = headers;
    let headers = headers.get(..count).unwrap_or_default();

    Ok(Status::Complete((
        Request {
            method,
            target,
            version,
            headers,
        },
        head_len,
    )))
}

/// Parses `method SP request-target SP HTTP-version` (CRLF already removed).
fn parse_request_line(line: &[u8]) -> Result<(&str, &str, u8), HandshakeError> {
    // RFC 9112 §3: request-line = method SP request-target SP HTTP-version, with exactly
    // one SP between parts (the target has no SP, so three pieces exactly).
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HandshakeError::Malformed);
    };
    // RFC 9110 §9.1: method = token.
    let method = token(method)?;
    // RFC 9112 §3.2: the request-target is made of visible URI characters; anything outside
    // VCHAR (SP, CTLs, obs-text) cannot be part of it.
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7E).contains(b)) {
        return Err(HandshakeError::Malformed);
    }
    let target = core::str::from_utf8(target).map_err(|_| HandshakeError::Malformed)?;
    // RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive. Only 1.0 and
    // 1.1 are HTTP/1.x messages this parser understands.
    let version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(HandshakeError::Malformed),
    };
    Ok((method, target, version))
}

/// Parses `field-name ":" OWS field-value OWS` (CRLF already removed).
fn parse_header_line(line: &[u8]) -> Result<Header<'_>, HandshakeError> {
    // RFC 9112 §5.2: obs-fold (a line starting with SP or HTAB) is rejected with 400 by a
    // server that does not unfold it.
    if let Some(b' ' | b'\t') = line.first() {
        return Err(HandshakeError::Malformed);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HandshakeError::Malformed)?;
    let (name, value) = line.split_at(colon);
    // RFC 9112 §5.1: no white space between field name and colon; a server MUST reject
    // such a line with 400. The token check rejects it along with any other non-tchar.
    let name = token(name)?;
    let value = value.strip_prefix(b":").ok_or(HandshakeError::Malformed)?;
    // RFC 9112 §5.1: OWS before and after the field value is not part of it.
    let value = trim_ows(value);
    // RFC 9110 §5.5: field-value = *field-content of VCHAR, SP, HTAB and obs-text; any other
    // CTL (NUL, CR, LF, DEL, ...) is rejected rather than passed on.
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7F) {
        return Err(HandshakeError::Malformed);
    }
    Ok(Header { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.2's sample key; decodes to 16 bytes.
    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade head, the base for most cases.
    const VALID: &[u8] = b"GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    /// Parses `buf` with a table of 16 headers and hands the result to `check`.
    fn with_parsed<R>(
        buf: &[u8],
        check: impl FnOnce(Result<Status<(Request<'_, '_>, usize)>, HandshakeError>) -> R,
    ) -> R {
        let mut headers = [Header::EMPTY; 16];
        check(parse(buf, &mut headers))
    }

    /// In the manner of httparse's `req!`: a named test over one request, with a body that
    /// sees the parsed request and the head length.
    macro_rules! req {
        ($name:ident, $buf:expr, |$req:ident, $len:ident| $body:expr) => {
            #[test]
            fn $name() {
                let buf: &[u8] = $buf;
                let mut headers = [Header::EMPTY; 16];
                match parse(buf, &mut headers) {
                    Ok(Status::Complete(($req, $len))) => $body,
                    other => panic!("{}: expected Complete, got {other:?}", stringify!($name)),
                }
            }
        };
    }

    req!(rfc_6455_sample_request, VALID, |req, len| {
        assert_eq!(len, VALID.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/chat");
        assert_eq!(req.version, 1);
        assert_eq!(req.headers.len(), 7);
        assert_eq!(req.headers[0].name, "Host");
        assert_eq!(req.headers[0].value, b"server.example.com");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), None);
        assert!(req.is_upgrade());
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert_eq!(req.validate_upgrade(), Ok(KEY));
    });

    req!(
        lowercase_and_mixed_case_names,
        b"GET / HTTP/1.1\r\nhost: a\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\
          OrIgIn: https://x\r\n\r\n",
        |req, _len| {
            assert_eq!(req.header("Host"), Some(&b"a"[..]));
            assert_eq!(req.header("HOST"), Some(&b"a"[..]));
            assert_eq!(req.headers[1].name, "UPGRADE", "names are kept as sent");
            assert_eq!(req.origin(), Some("https://x"));
            assert_eq!(req.validate_upgrade(), Ok(KEY));
        }
    );

    req!(
        connection_keep_alive_upgrade,
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        |req, _len| assert_eq!(req.validate_upgrade(), Ok(KEY))
    );

    req!(
        connection_split_over_lines_and_tabs,
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c,\twebsocket \r\nConnection: keep-alive\r\n\
          Connection:\t,UPGRADE\t\r\nSec-WebSocket-Version:  13 \r\n\
          Sec-WebSocket-Key:\tdGhlIHNhbXBsZSBub25jZQ==\t\r\n\r\n",
        |req, _len| {
            assert_eq!(req.header("Upgrade"), Some(&b"h2c,\twebsocket"[..]));
            assert_eq!(req.validate_upgrade(), Ok(KEY));
        }
    );

    req!(
        upgrade_listed_on_a_later_line,
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n\r\n",
        |req, _len| assert!(req.is_upgrade())
    );

    req!(
        upgrade_token_must_match_whole,
        b"GET / HTTP/1.1\r\nUpgrade: websockets, xwebsocket, websocket/13\r\n\r\n",
        |req, _len| assert!(!req.is_upgrade())
    );

    req!(
        multiple_protocol_headers,
        b"GET / HTTP/1.1\r\nSec-WebSocket-Protocol: chat, , v2.chat\r\n\
          X-Other: y\r\nsec-websocket-protocol:\tMQTT ,\r\n\
          Sec-WebSocket-Protocol: \xff\xfe\r\nSec-WebSocket-Protocol: last\r\n\r\n",
        |req, _len| {
            // Order kept, empties and the non-UTF-8 line skipped, case kept.
            assert_eq!(
                req.protocols().collect::<Vec<_>>(),
                ["chat", "v2.chat", "MQTT", "last"]
            );
        }
    );

    req!(
        query_string,
        b"GET /feed/live?topic=a?b&x=1 HTTP/1.1\r\n\r\n",
        |req, len| {
            assert_eq!(len, 41);
            assert_eq!(req.path(), "/feed/live");
            assert_eq!(req.query(), Some("topic=a?b&x=1"));
            assert!(req.headers.is_empty());
            assert_eq!(req.protocols().count(), 0);
        }
    );

    req!(empty_query, b"GET /x? HTTP/1.1\r\n\r\n", |req, _len| {
        assert_eq!(req.path(), "/x");
        assert_eq!(req.query(), Some(""));
    });

    req!(
        obs_text_in_values,
        b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9 \x80\xff\r\nOrigin: \xff\r\n\r\n",
        |req, _len| {
            assert_eq!(req.header("x-name"), Some(&b"caf\xc3\xa9 \x80\xff"[..]));
            assert_eq!(req.origin(), None, "a non-UTF-8 origin is not returned");
            assert_eq!(req.header("Origin"), Some(&b"\xff"[..]));
        }
    );

    req!(
        empty_value_and_inner_white_space,
        b"GET * HTTP/1.0\r\nX-Empty:\r\nX-Blank: \t \r\nX-Inner:  a \t b  \r\n\r\n",
        |req, _len| {
            assert_eq!(req.version, 0);
            assert_eq!(req.target, "*");
            assert_eq!(req.header("x-empty"), Some(&b""[..]));
            assert_eq!(req.header("x-blank"), Some(&b""[..]));
            assert_eq!(req.header("x-inner"), Some(&b"a \t b"[..]));
            assert_eq!(req.header("x-missing"), None);
        }
    );

    req!(
        first_of_duplicate_headers,
        b"GET / HTTP/1.1\r\nOrigin: one\r\nOrigin: two\r\n\r\n",
        |req, _len| assert_eq!(req.origin(), Some("one"))
    );

    req!(
        token_method_and_header_names,
        b"M-SEARCH!#$%&'*+.^_`|~09 / HTTP/1.1\r\nX!#$%&'*+-.^_`|~09: v\r\n\r\n",
        |req, _len| {
            assert_eq!(req.method, "M-SEARCH!#$%&'*+.^_`|~09");
            assert_eq!(req.headers[0].name, "X!#$%&'*+-.^_`|~09");
            assert_eq!(
                req.validate_upgrade(),
                Err(HandshakeError::MethodNotAllowed)
            );
        }
    );

    req!(
        frame_bytes_after_the_head_are_left,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        |req, len| {
            // The head and a masked "Hello" frame (RFC 6455 §5.7) arrived in one read.
            assert_eq!(len, 27);
            assert_eq!(req.headers.len(), 1);
            assert_eq!(
                &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
                    [len..],
                b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
            );
        }
    );

    req!(
        second_head_after_the_first_is_not_parsed,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nX: y\r\n\r\n",
        |req, len| {
            assert_eq!(len, 19);
            assert_eq!(req.target, "/a");
            assert!(req.headers.is_empty());
        }
    );

    /// What a case should come to.
    #[derive(Debug)]
    enum Want {
        /// `parse` needs more bytes.
        Partial,
        /// `parse` fails.
        Parse(HandshakeError),
        /// `parse` succeeds, `validate_upgrade` fails.
        Upgrade(HandshakeError),
        /// Both succeed with this key.
        Key(&'static [u8]),
    }

    /// Builds an upgrade head from the valid one with header line `name` replaced by `line`
    /// (or removed when `line` is empty).
    fn replace(name: &str, line: &str) -> Vec<u8> {
        let text = core::str::from_utf8(VALID).unwrap();
        let mut out = String::new();
        for l in text.split_inclusive("\r\n") {
            if l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                if !line.is_empty() {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            } else {
                out.push_str(l);
            }
        }
        out.into_bytes()
    }

    #[test]
    fn table_of_outcomes() {
        use HandshakeError::*;
        use Want::*;
        let owned: Vec<(&str, Vec<u8>, Want)> = vec![
            // --- partial input ---
            ("empty", b"".to_vec(), Partial),
            ("request line only", b"GET / HTTP/1.1\r\n".to_vec(), Partial),
            ("one CRLF short", VALID[..VALID.len() - 2].to_vec(), Partial),
            ("one byte short", VALID[..VALID.len() - 1].to_vec(), Partial),
            (
                "bare LF end is partial",
                b"GET / HTTP/1.1\n\n".to_vec(),
                Partial,
            ),
            // --- valid ---
            ("valid", VALID.to_vec(), Key(KEY)),
            (
                "valid key, other value",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==",
                ),
                Key(b"AQIDBAUGBwgJCgsMDQ4PEA=="),
            ),
            // --- parse errors: request line ---
            (
                "leading empty line",
                b"\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            ("empty head", b"\r\n\r\n".to_vec(), Parse(Malformed)),
            (
                "no target",
                b"GET HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "empty target",
                b"GET  HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "double space",
                b"GET /  HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "trailing space",
                b"GET / HTTP/1.1 \r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "four parts",
                b"GET / x HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "tab separator",
                b"GET\t/ HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "method not token",
                b"G(T / HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "method empty",
                b" / HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "target obs-text",
                b"GET /\xff HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "target DEL",
                b"GET /\x7f HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "target NUL",
                b"GET /\0 HTTP/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "HTTP/2.0",
                b"GET / HTTP/2.0\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "HTTP/1.2",
                b"GET / HTTP/1.2\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "HTTP/0.9",
                b"GET / HTTP/0.9\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "lowercase http",
                b"GET / http/1.1\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "HTTP/1.10",
                b"GET / HTTP/1.10\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            ("no version", b"GET /\r\n\r\n".to_vec(), Parse(Malformed)),
            (
                "bare CR in line",
                b"GET / HTTP/1.1\rX\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            // --- parse errors: line endings ---
            (
                "bare LF line",
                b"GET / HTTP/1.1\nHost: a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "bare LF header",
                b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "LF LF before end",
                b"GET / HTTP/1.1\r\n\nA: b\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            // --- parse errors: header lines ---
            (
                "obs-fold SP",
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "obs-fold HTAB",
                b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "space before colon",
                b"GET / HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "tab before colon",
                b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "no colon",
                b"GET / HTTP/1.1\r\nHost a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "empty name",
                b"GET / HTTP/1.1\r\n: a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "name not token",
                b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "name obs-text",
                b"GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "value NUL",
                b"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "value 0x08",
                b"GET / HTTP/1.1\r\nA: b\x08\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "value 0x0B",
                b"GET / HTTP/1.1\r\nA: b\x0bc\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "value 0x1F",
                b"GET / HTTP/1.1\r\nA: \x1f\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "value DEL",
                b"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            (
                "value bare CR",
                b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n".to_vec(),
                Parse(Malformed),
            ),
            // --- validate_upgrade errors, in check order ---
            (
                "POST",
                [b"POST".as_slice(), &VALID[3..]].concat(),
                Upgrade(MethodNotAllowed),
            ),
            (
                "lowercase get",
                [b"get".as_slice(), &VALID[3..]].concat(),
                Upgrade(MethodNotAllowed),
            ),
            (
                "POST over HTTP/1.0 is the method first",
                b"POST / HTTP/1.0\r\n\r\n".to_vec(),
                Upgrade(MethodNotAllowed),
            ),
            (
                "HTTP/1.0",
                [&b"GET /chat HTTP/1.0"[..], &VALID[18..]].concat(),
                Upgrade(HttpVersion),
            ),
            ("no Host", replace("Host", ""), Upgrade(MissingHost)),
            (
                "two Host lines",
                replace("Host", "Host: a\r\nHost: b"),
                Upgrade(Malformed),
            ),
            ("no Upgrade", replace("Upgrade", ""), Upgrade(NotUpgrade)),
            (
                "Upgrade: h2c",
                replace("Upgrade", "Upgrade: h2c"),
                Upgrade(NotUpgrade),
            ),
            (
                "Upgrade: empty",
                replace("Upgrade", "Upgrade:"),
                Upgrade(NotUpgrade),
            ),
            (
                "no Connection",
                replace("Connection", ""),
                Upgrade(MissingConnectionUpgrade),
            ),
            (
                "Connection: keep-alive",
                replace("Connection", "Connection: keep-alive"),
                Upgrade(MissingConnectionUpgrade),
            ),
            (
                "Connection: upgrades",
                replace("Connection", "Connection: upgrades"),
                Upgrade(MissingConnectionUpgrade),
            ),
            (
                "no version",
                replace("Sec-WebSocket-Version", ""),
                Upgrade(UnsupportedVersion),
            ),
            (
                "version 8",
                replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
                Upgrade(UnsupportedVersion),
            ),
            (
                "version list",
                replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8"),
                Upgrade(UnsupportedVersion),
            ),
            (
                "version twice",
                replace(
                    "Sec-WebSocket-Version",
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13",
                ),
                Upgrade(UnsupportedVersion),
            ),
            (
                "no key",
                replace("Sec-WebSocket-Key", ""),
                Upgrade(InvalidKey),
            ),
            (
                "key twice",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key not base64",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key 15 bytes",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4P",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key 17 bytes",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEBE=",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key 18 bytes, 24 chars",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEBES",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key without padding",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key URL-safe alphabet",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: ____________________-A==",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key non-canonical trailing bits",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key with inner space",
                replace(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==",
                ),
                Upgrade(InvalidKey),
            ),
            (
                "key empty",
                replace("Sec-WebSocket-Key", "Sec-WebSocket-Key:"),
                Upgrade(InvalidKey),
            ),
        ];
        for (name, buf, want) in &owned {
            with_parsed(buf, |got| match (got, want) {
                (Ok(Status::Partial), Partial) => {}
                (Err(e), Parse(w)) => assert_eq!(e, *w, "{name}"),
                (Ok(Status::Complete((req, len))), Upgrade(w)) => {
                    assert_eq!(len, buf.len(), "{name}");
                    assert_eq!(req.validate_upgrade(), Err(*w), "{name}");
                }
                (Ok(Status::Complete((req, len))), Key(k)) => {
                    assert_eq!(len, buf.len(), "{name}");
                    assert_eq!(req.validate_upgrade(), Ok(*k), "{name}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            });
        }
    }

    #[test]
    fn too_many_headers() {
        let buf = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let mut three = [Header::EMPTY; 3];
        let Ok(Status::Complete((req, _))) = parse(buf, &mut three) else {
            panic!("three headers fit three slots");
        };
        assert_eq!(req.headers.len(), 3);
        let mut two = [Header::EMPTY; 2];
        assert_eq!(
            parse(buf, &mut two).map(|s| s.is_partial()),
            Err(HandshakeError::TooManyHeaders)
        );
        let mut none: [Header<'_>; 0] = [];
        assert_eq!(
            parse(buf, &mut none).map(|s| s.is_partial()),
            Err(HandshakeError::TooManyHeaders)
        );
        // No header lines need no slots.
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n", &mut none).is_ok_and(|s| s.is_complete()));
    }

    #[test]
    fn headers_is_the_filled_prefix() {
        let buf = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        let mut table = [Header {
            name: "stale",
            value: b"x",
        }; 5];
        let Ok(Status::Complete((req, _))) = parse(buf, &mut table) else {
            panic!("valid head");
        };
        assert_eq!(
            req.headers,
            [
                Header {
                    name: "A",
                    value: b"1"
                },
                Header {
                    name: "B",
                    value: b"2"
                }
            ]
        );
    }

    /// The first index past `\r\n\r\n`, by brute force, among windows starting at `start`.
    fn naive_end(buf: &[u8], start: usize) -> Option<usize> {
        (start..buf.len().saturating_sub(3))
            .find(|&i| &buf[i..i + 4] == b"\r\n\r\n")
            .map(|i| i + 4)
    }

    /// Checks that `head ++ trailing` parses the same however it is split: `Partial` for
    /// every prefix shorter than `head`, then the same request and head length; and that
    /// `find_head_end` fed one more byte each time finds the same end as one call.
    fn assert_same_at_every_split(head: &[u8], trailing: &[u8]) {
        let full = [head, trailing].concat();
        let mut whole_table = [Header::EMPTY; 32];
        let Ok(Status::Complete((whole, whole_len))) = parse(&full, &mut whole_table) else {
            panic!("the whole buffer must parse");
        };
        assert_eq!(whole_len, head.len());
        assert_eq!(&full[whole_len..], trailing, "frame bytes are left");

        for n in 0..=full.len() {
            let mut table = [Header::EMPTY; 32];
            match parse(&full[..n], &mut table) {
                Ok(Status::Partial) => assert!(n < head.len(), "partial at {n}"),
                Ok(Status::Complete((req, len))) => {
                    assert!(n >= head.len(), "complete too early at {n}");
                    assert_eq!(len, whole_len, "head length at {n}");
                    assert_eq!(req.method, whole.method);
                    assert_eq!(req.target, whole.target);
                    assert_eq!(req.version, whole.version);
                    assert_eq!(req.headers, whole.headers, "headers at {n}");
                }
                Err(e) => panic!("error {e:?} at split {n}"),
            }
        }

        let single = find_head_end(&full, 0);
        assert_eq!(single, Some(head.len()));
        let mut incremental = None;
        for n in 1..=full.len() {
            if let Some(end) = find_head_end(&full[..n], n - 1) {
                assert_eq!(n, head.len(), "found as soon as the last byte arrives");
                incremental = Some(end);
                break;
            }
        }
        assert_eq!(incremental, single);
    }

    #[test]
    fn same_result_at_every_split() {
        assert_same_at_every_split(VALID, b"");
        // Head and a masked "Hello" frame in the same read.
        assert_same_at_every_split(VALID, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
        // Trailing bytes that look like a terminator must not move the end.
        assert_same_at_every_split(b"GET / HTTP/1.1\r\n\r\n", b"\r\n\r\n");
        // Short head, obs-text and tabs, a trailing frame starting with CR LF.
        assert_same_at_every_split(b"GET /?q HTTP/1.0\r\nX:\t\xff \r\nY:\r\n\r\n", b"\r\n\x88");
    }

    #[test]
    fn head_with_cr_runs_at_every_split() {
        // CRs inside a value are Malformed, but the search must still stop at the true end.
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n\r\n";
        assert_eq!(find_head_end(buf, 0), Some(24));
        for n in 1..=buf.len() {
            if let Some(end) = find_head_end(&buf[..n], n - 1) {
                assert_eq!((n, end), (24, 24));
                return;
            }
        }
        panic!("end not found incrementally");
    }

    #[test]
    fn find_head_end_matches_brute_force() {
        // Every string of length 0..=8 over {\r, \n, x}: each `from` obeying the contract
        // (no terminator wholly before it) must find the first terminator.
        let alphabet = [b'\r', b'\n', b'x'];
        let mut buf = Vec::new();
        for len in 0..=8u32 {
            for mut code in 0..3usize.pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[code % 3]);
                    code /= 3;
                }
                let expected = naive_end(&buf, 0);
                assert_eq!(find_head_end(&buf, 0), expected, "{buf:?}");
                for from in 0..=buf.len() + 2 {
                    if naive_end(&buf[..from.min(buf.len())], 0).is_none() {
                        assert_eq!(find_head_end(&buf, from), expected, "{buf:?} from {from}");
                    }
                    // Whatever `from` says, the search covers windows from `from - 3` on.
                    assert_eq!(
                        find_head_end(&buf, from),
                        naive_end(&buf, from.saturating_sub(3)),
                        "{buf:?} from {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn find_head_end_edges() {
        assert_eq!(find_head_end(b"", 0), None);
        assert_eq!(find_head_end(b"\r\n\r", 0), None);
        assert_eq!(find_head_end(b"\r\n\r\n", 0), Some(4));
        // From the last byte: the terminator may end there, so it is still seen.
        assert_eq!(find_head_end(b"\r\n\r\n", 3), Some(4));
        // Past it: `from` promised that no terminator lies wholly before it.
        assert_eq!(find_head_end(b"\r\n\r\n", 4), None);
        assert_eq!(find_head_end(b"\r\n\r\n", usize::MAX), None);
        assert_eq!(find_head_end(b"\r\r\n\r\n", 0), Some(5));
        assert_eq!(find_head_end(b"\n\r\n\r\n", 0), Some(5));
        assert_eq!(find_head_end(b"a\r\n\r\nb\r\n\r\n", 0), Some(5));
    }

    #[test]
    fn request_accessors_on_hand_built_request() {
        // Other code may build a Request by hand: the accessors must not rely on the parser.
        let headers = [
            Header {
                name: "host",
                value: b"h",
            },
            Header {
                name: "upgrade",
                value: b"WEBSOCKET",
            },
            Header {
                name: "connection",
                value: b"Upgrade",
            },
            Header {
                name: "sec-websocket-version",
                value: b" 13 ",
            },
            Header {
                name: "sec-websocket-key",
                value: b" dGhlIHNhbXBsZSBub25jZQ== ",
            },
        ];
        let req = Request {
            method: "GET",
            target: "/",
            version: 1,
            headers: &headers,
        };
        assert_eq!(req.validate_upgrade(), Ok(KEY));
        assert_eq!(req.origin(), None);
        assert_eq!(req.path(), "/");
    }

    #[test]
    fn protocols_outlive_the_request_value() {
        // The iterator borrows only the table and the buffer, not the `Request` itself.
        let buf = b"GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a,b\r\n\r\n";
        let mut table = [Header::EMPTY; 4];
        let protocols = {
            let Ok(Status::Complete((req, _))) = parse(buf, &mut table) else {
                panic!("valid head");
            };
            req.protocols()
        };
        assert_eq!(protocols.collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn trim_ows_cases() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b"\ta b "), b"a b");
        assert_eq!(trim_ows(b"x"), b"x");
    }
}
