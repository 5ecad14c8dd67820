//! ② The server's answer to a request head: `101 Switching Protocols`, the head of an event
//! stream, or an HTTP error.
//!
//! - **In:** a validated `Sec-WebSocket-Key`, a chosen subprotocol, or a status code.
//! - **Out:** the exact response bytes, appended to a caller-owned `Vec<u8>`.
//! - **Never:** allocates anything but that `Vec`'s growth, validates the request (that is
//!   [`super::handshake`]'s job), or writes a response that leaves the connection open.

use base64::Engine as _;

/// RFC 6455 §1.3: the GUID concatenated to the client's key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Content-Type` of [`error`] bodies.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §1.3, §4.2.2).
///
/// `key` is the header value as sent (trimmed), not its decoded bytes.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    // RFC 6455 §4.2.2 item 5.4: base64(SHA-1(key ++ GUID)).
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID);
    let digest = sha1.digest().bytes();
    let mut accept = [0u8; 28];
    // 20 bytes always encode to exactly 28 padded characters, so this cannot fail.
    let written = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut accept);
    debug_assert_eq!(written, Ok(28));
    accept
}

/// Appends a `101 Switching Protocols` response to `out`.
///
/// `protocol` is echoed in `Sec-WebSocket-Protocol`; it must be one the client offered
/// (see [`select_protocol`]) and a token, since it is written as is.
pub fn switching_protocols(out: &mut Vec<u8>, key: &[u8], protocol: Option<&str>) {
    // RFC 6455 §4.2.2 item 5: status 101, Upgrade, Connection and Sec-WebSocket-Accept.
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
    // RFC 6455 §4.2.2 item 5.5: the selected subprotocol, only if one was selected.
    if let Some(protocol) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete HTTP/1.1 response with `Connection: close` and `Content-Length`.
///
/// `headers` are written in order before `Content-Type` (left out when `content_type` is
/// empty); names and values are written as is, so they must not hold CR or LF.
pub fn http_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) {
    write_head(out, status, headers, content_type, body.len());
    out.extend_from_slice(body);
}

/// Appends the head of an event stream's response: `200`, `Content-Type: text/event-stream`,
/// no `Content-Length` and no chunking, so the body is every byte until the server closes
/// (RFC 9112 §6.3 item 8), as the WHATWG `EventSource` reads it.
///
/// `Cache-Control: no-store` keeps caches from replaying a live stream, and
/// `X-Accel-Buffering: no` asks a reverse proxy (nginx and those that follow it) to pass each
/// event on at once rather than buffer the body. `allow_origin` is echoed in
/// `Access-Control-Allow-Origin` for a cross-origin page (a browser lets it read the stream
/// only then); it must be a header value as received (no CR or LF).
pub fn event_stream(out: &mut Vec<u8>, allow_origin: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/event-stream\r\n\
          Cache-Control: no-store\r\n\
          X-Accel-Buffering: no\r\n",
    );
    if let Some(origin) = allow_origin {
        push_header(out, "Access-Control-Allow-Origin", origin);
    }
    // RFC 9112 §9.6: the connection ends with the body, and the server says so.
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// Appends the error response for `status`, with the headers the status calls for
/// (`Sec-WebSocket-Version: 13` with 426, `Retry-After` with 503).
///
/// The body is the reason phrase and a newline, as `text/plain`; 405 also gets
/// `Allow: GET`.
pub fn error(out: &mut Vec<u8>, status: u16) {
    let extra: &[(&str, &str)] = match status {
        // RFC 9110 §15.5.6: a 405 MUST carry Allow; the only method served is GET.
        405 => &[("Allow", "GET")],
        // RFC 6455 §4.2.2: on a version mismatch, answer with the versions we support.
        426 => &[("Sec-WebSocket-Version", "13")],
        // RFC 9110 §10.2.3: tell a client turned away for load when to try again.
        503 => &[("Retry-After", "1")],
        _ => &[],
    };
    let reason = reason_phrase(status);
    // The body is the phrase plus "\n", written in two parts to avoid building it.
    write_head(
        out,
        status,
        extra,
        TEXT_PLAIN,
        reason.len().saturating_add(1),
    );
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// The reason phrase of a status code.
///
/// Codes without a phrase of their own get that of their class's `x00` code, which is how
/// RFC 9110 §15 has a client treat an unrecognized status: 1xx "Continue", 2xx "OK", 3xx
/// "Multiple Choices", 4xx "Bad Request", 5xx "Internal Server Error"; codes outside
/// 100–599 get "Unknown".
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => match status / 100 {
            1 => "Continue",
            2 => "OK",
            3 => "Multiple Choices",
            4 => "Bad Request",
            5 => "Internal Server Error",
            _ => "Unknown",
        },
    }
}

/// The server's first preference that the client offered.
///
/// Matching is exact: subprotocol names are case-sensitive (RFC 6455 §4.1,
/// §11.3.4).
pub fn select_protocol<'p, 'o>(
    server_prefs: &[&'p str],
    offers: impl Iterator<Item = &'o str> + Clone,
) -> Option<&'p str> {
    // RFC 6455 §4.2.2 item 5.5: the server picks one of the client's values; walking the
    // server's list first makes the server's order win.
    server_prefs
        .iter()
        .copied()
        .find(|pref| offers.clone().any(|offer| offer == *pref))
}

/// Appends the status line and headers of a `Connection: close` response with a body of
/// `content_len` bytes, up to and including the empty line.
fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    content_len: usize,
) {
    // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF.
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        push_header(out, name, value);
    }
    if !content_type.is_empty() {
        push_header(out, "Content-Type", content_type);
    }
    // RFC 9112 §6.3: with Content-Length the client knows where the body ends without
    // waiting for the close.
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, content_len as u64);
    out.extend_from_slice(b"\r\n");
    // RFC 9112 §9.6: the server closes after this response, and says so.
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// Appends `name: value\r\n`.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, formatted in a stack buffer (also the event stream's `retry:`).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        // `n % 10` is below 10, so the cast is exact.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a response into (head, body) at the first blank line.
    fn split_response(bytes: &[u8]) -> (&str, &[u8]) {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a blank line")
            + 4;
        let (head, body) = bytes.split_at(end);
        (core::str::from_utf8(head).expect("ASCII head"), body)
    }

    /// The value of the `Content-Length` header of a response head.
    fn content_length(head: &str) -> usize {
        head.split("\r\n")
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .expect("a number")
    }

    #[test]
    fn an_event_stream_head_has_no_length_and_no_chunking() {
        let mut out = Vec::new();
        event_stream(&mut out, None);
        let (head, body) = split_response(&out);
        assert!(body.is_empty());
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
             X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        event_stream(&mut out, Some("https://board.example"));
        let (head, _) = split_response(&out);
        assert!(head.contains("\r\nAccess-Control-Allow-Origin: https://board.example\r\n"));
        assert!(!head.contains("Content-Length") && !head.contains("Transfer-Encoding"));
    }

    #[test]
    fn accept_key_rfc_6455_sample() {
        // RFC 6455 §1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accept_key_matches_tungstenite() {
        for key in [
            &b"dGhlIHNhbXBsZSBub25jZQ=="[..],
            b"AQIDBAUGBwgJCgsMDQ4PEA==",
            b"x3JJHMbDL1EzLkh9GBhXDw==",
            b"",
            b"not even base64",
        ] {
            let ours = accept_key(key);
            assert_eq!(
                core::str::from_utf8(&ours).unwrap(),
                tungstenite::handshake::derive_accept_key(key),
                "{key:?}"
            );
        }
    }

    #[test]
    fn switching_protocols_without_protocol() {
        let mut out = b"kept".to_vec();
        switching_protocols(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", None);
        assert_eq!(
            out,
            b"keptHTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              \r\n"
        );
    }

    #[test]
    fn switching_protocols_with_protocol() {
        let mut out = Vec::new();
        switching_protocols(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", Some("chat"));
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\
              \r\n"
        );
    }

    #[test]
    fn error_426_exact() {
        let mut out = Vec::new();
        error(&mut out, 426);
        assert_eq!(
            out,
            b"HTTP/1.1 426 Upgrade Required\r\n\
              Sec-WebSocket-Version: 13\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 17\r\n\
              Connection: close\r\n\
              \r\n\
              Upgrade Required\n"
        );
    }

    #[test]
    fn error_503_exact() {
        let mut out = Vec::new();
        error(&mut out, 503);
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\n\
              Retry-After: 1\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 20\r\n\
              Connection: close\r\n\
              \r\n\
              Service Unavailable\n"
        );
    }

    #[test]
    fn error_405_has_allow() {
        let mut out = Vec::new();
        error(&mut out, 405);
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\n\
              Allow: GET\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 19\r\n\
              Connection: close\r\n\
              \r\n\
              Method Not Allowed\n"
        );
    }

    #[test]
    fn error_400_has_no_extra_header() {
        let mut out = Vec::new();
        error(&mut out, 400);
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 12\r\n\
              Connection: close\r\n\
              \r\n\
              Bad Request\n"
        );
    }

    #[test]
    fn content_length_matches_body_for_every_status() {
        for status in (0..=1000).chain([u16::MAX]) {
            let mut out = Vec::new();
            error(&mut out, status);
            let (head, body) = split_response(&out);
            assert_eq!(content_length(head), body.len(), "{status}");
            let status_line = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
            assert!(head.starts_with(&status_line), "{head}");
            assert_eq!(body, format!("{}\n", reason_phrase(status)).as_bytes());
            assert!(head.ends_with("Connection: close\r\n\r\n"));
        }
    }

    #[test]
    fn http_response_exact() {
        let mut out = Vec::new();
        http_response(
            &mut out,
            200,
            &[("Cache-Control", "no-store"), ("X-A", "b")],
            "application/json",
            b"{\"ok\":true}",
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\n\
              Cache-Control: no-store\r\n\
              X-A: b\r\n\
              Content-Type: application/json\r\n\
              Content-Length: 11\r\n\
              Connection: close\r\n\
              \r\n\
              {\"ok\":true}"
        );
    }

    #[test]
    fn http_response_without_content_type_or_body() {
        let mut out = Vec::new();
        http_response(&mut out, 204, &[], "", b"");
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\n\
              Content-Length: 0\r\n\
              Connection: close\r\n\
              \r\n"
        );
    }

    #[test]
    fn http_response_large_body_length() {
        let body = vec![b'x'; 1_234_567];
        let mut out = Vec::new();
        http_response(&mut out, 200, &[], "text/plain", &body);
        let (head, rest) = split_response(&out);
        assert_eq!(content_length(head), 1_234_567);
        assert_eq!(rest, &body[..]);
    }

    #[test]
    fn push_decimal_cases() {
        for n in [0, 1, 9, 10, 99, 100, 426, 65_535, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn reason_phrases() {
        let table: &[(u16, &str)] = &[
            (101, "Switching Protocols"),
            (200, "OK"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
            // Class defaults.
            (100, "Continue"),
            (199, "Continue"),
            (201, "OK"),
            (302, "Multiple Choices"),
            (418, "Bad Request"),
            (499, "Bad Request"),
            (502, "Internal Server Error"),
            (599, "Internal Server Error"),
            (0, "Unknown"),
            (99, "Unknown"),
            (600, "Unknown"),
            (u16::MAX, "Unknown"),
        ];
        for &(status, phrase) in table {
            assert_eq!(reason_phrase(status), phrase, "{status}");
        }
    }

    #[test]
    fn every_handshake_error_has_a_response() {
        use crate::proto::HandshakeError::*;
        for e in [
            Malformed,
            MethodNotAllowed,
            HttpVersion,
            MissingHost,
            NotUpgrade,
            MissingConnectionUpgrade,
            InvalidKey,
            UnsupportedVersion,
            HeadTooLarge,
            TooManyHeaders,
            ForbiddenOrigin,
            Unavailable,
        ] {
            let mut out = Vec::new();
            error(&mut out, e.status());
            let (head, body) = split_response(&out);
            assert_ne!(reason_phrase(e.status()), "Unknown", "{e}");
            assert_eq!(content_length(head), body.len(), "{e}");
        }
    }

    #[test]
    fn select_protocol_server_order_wins() {
        let offers = ["chat", "superchat", "mqtt"];
        assert_eq!(
            select_protocol(&["mqtt", "chat"], offers.iter().copied()),
            Some("mqtt")
        );
        assert_eq!(
            select_protocol(&["none", "superchat"], offers.iter().copied()),
            Some("superchat")
        );
    }

    #[test]
    fn select_protocol_is_case_sensitive_and_exact() {
        let offers = ["Chat", "chat.v2"];
        assert_eq!(select_protocol(&["chat"], offers.iter().copied()), None);
        assert_eq!(select_protocol(&["chat.v"], offers.iter().copied()), None);
        assert_eq!(
            select_protocol(&["chat", "Chat"], offers.iter().copied()),
            Some("Chat")
        );
    }

    #[test]
    fn select_protocol_empty_sides() {
        assert_eq!(select_protocol(&[], ["a"].iter().copied()), None);
        assert_eq!(select_protocol(&["a"], core::iter::empty()), None);
    }

    #[test]
    fn select_protocol_from_parsed_request() {
        use crate::proto::handshake::{parse, Header};
        use crate::proto::Status;
        let buf = b"GET / HTTP/1.1\r\nSec-WebSocket-Protocol: v1, v2\r\n\
                    Sec-WebSocket-Protocol: v3\r\n\r\n";
        let mut table = [Header::EMPTY; 4];
        let Ok(Status::Complete((req, _))) = parse(buf, &mut table) else {
            panic!("valid head");
        };
        // `protocols()` is not `Clone` through its opaque type, so the offers are collected.
        let offers: Vec<&str> = req.protocols().collect();
        assert_eq!(
            select_protocol(&["v3", "v2"], offers.iter().copied()),
            Some("v3")
        );
        assert_eq!(select_protocol(&["v9"], offers.iter().copied()), None);
    }
}
