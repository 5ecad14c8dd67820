//! The client side of the opening handshake (RFC 6455 §4.1): the request, and the check of the
//! server's answer.

use base64::Engine as _;

/// RFC 6455 §1.3: appended to the key before hashing.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Length of a base64-encoded 16-byte `Sec-WebSocket-Key`.
pub const KEY_LEN: usize = 24;

/// Why the server's answer was not a valid upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A well-formed answer with a status other than 101.
    Status(u16),
    /// 101, but `Sec-WebSocket-Accept` is missing or wrong, or `Upgrade` is not `websocket`.
    BadUpgrade,
    /// Not an HTTP/1.1 response.
    Malformed,
}

/// Encodes 16 random bytes as a `Sec-WebSocket-Key`.
pub fn key(nonce: [u8; 16]) -> [u8; KEY_LEN] {
    let mut out = [0; KEY_LEN];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(nonce, &mut out)
        .unwrap_or(0);
    debug_assert_eq!(n, KEY_LEN);
    out
}

/// Appends the upgrade request to `out`.
pub fn push_request(out: &mut Vec<u8>, host: &str, path: &str, key: &[u8; KEY_LEN]) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The `Sec-WebSocket-Accept` value a server must answer to `key`.
pub fn accept(key: &[u8; KEY_LEN]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// Checks the response in `buf`: `Ok(None)` if its head is not complete yet, else the length of
/// the head (bytes after it are the first frames).
///
/// # Errors
/// Why the server's answer does not open a WebSocket.
pub fn parse_response(buf: &[u8], key: &[u8; KEY_LEN]) -> Result<Option<usize>, Refusal> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Refusal::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(Refusal::Malformed)?;
    if status != 101 {
        return Err(Refusal::Status(status));
    }
    let (mut upgrade, mut accepted) = (false, false);
    let expected = accept(key);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(Refusal::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accepted = value == expected;
        }
    }
    if upgrade && accepted {
        Ok(Some(end + 4))
    } else {
        Err(Refusal::BadUpgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_KEY: &[u8; KEY_LEN] = b"dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn rfc_1_3_accept_key() {
        assert_eq!(accept(SAMPLE_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(&key(*b"the sample nonce"), SAMPLE_KEY);
    }

    #[test]
    fn response_is_checked_only_once_complete() {
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        let head = ok.len() - 2;
        for cut in 0..head {
            assert_eq!(
                parse_response(&ok[..cut], SAMPLE_KEY),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_response(ok, SAMPLE_KEY), Ok(Some(head)));
    }

    #[test]
    fn refusals_are_told_apart() {
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n";
        assert_eq!(parse_response(busy, SAMPLE_KEY), Err(Refusal::Status(503)));
        let wrong = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert_eq!(parse_response(wrong, SAMPLE_KEY), Err(Refusal::BadUpgrade));
        assert_eq!(
            parse_response(b"SSH-2.0\r\n\r\n", SAMPLE_KEY),
            Err(Refusal::Malformed)
        );
    }
}
