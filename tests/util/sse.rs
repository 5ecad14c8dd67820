//! An event-stream client for the tests: a plain HTTP/1.1 `GET` over any stream (TCP, TLS),
//! the response head read by hand, then the body parsed line by line by the WHATWG HTML
//! standard's rules (§9.2.6 "Interpreting an event stream"). Written apart from the crate's
//! own parser (`emberws::testing::EventParser`) so that each checks the server independently.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The read timeout of [`connect`]: only ever an upper bound.
const DEADLINE: Duration = Duration::from_secs(30);

/// What the stream carried, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `retry:` with ASCII digits: the reconnection delay in milliseconds.
    Retry(u64),
    /// A line that starts with a colon, without it.
    Comment(String),
    /// A dispatched event: the `id:` of its block, if any, and its data.
    Event { id: Option<String>, data: String },
}

/// An event with an id, for `assert_eq!`.
pub fn event(id: Option<&str>, data: &str) -> Item {
    Item::Event {
        id: id.map(str::to_owned),
        data: data.to_owned(),
    }
}

/// The answer's status line and headers.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One open event stream.
pub struct Client<S: Read> {
    reader: BufReader<Recording<S>>,
    pub head: Head,
    block: Block,
}

/// The fields of the event being read, until the empty line that dispatches it.
#[derive(Default)]
struct Block {
    data: String,
    has_data: bool,
    id: Option<String>,
}

/// A reader that keeps a copy of every body byte read, for tests of the exact bytes.
struct Recording<S> {
    inner: S,
    seen: Vec<u8>,
}

impl<S: Read> Read for Recording<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The request a browser's `EventSource` sends, with extra header lines.
pub fn request(target: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Opens `target` over TCP with generous timeouts; panics on an answer without a head.
pub fn connect(addr: SocketAddr, target: &str) -> Client<TcpStream> {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    sock.set_write_timeout(Some(DEADLINE)).unwrap();
    open(sock, target, &[])
}

/// Sends the request on `stream` and reads the answer's head.
pub fn open<S: Read + Write>(mut stream: S, target: &str, headers: &[(&str, &str)]) -> Client<S> {
    stream
        .write_all(request(target, headers).as_bytes())
        .expect("write the request");
    let mut reader = BufReader::new(Recording {
        inner: stream,
        seen: Vec::new(),
    });
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read the response head");
        assert!(n > 0, "the connection ended inside the response head");
        let line = line.trim_end_matches("\r\n").to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let status_line = lines.first().expect("a status line").clone();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let headers = lines[1..]
        .iter()
        .map(|l| {
            let (name, value) = l.split_once(':').expect("a header line");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    // What the BufReader holds beyond the head is body: the record starts there.
    let buffered = reader.buffer().to_vec();
    reader.get_mut().seen = buffered;
    Client {
        reader,
        head: Head { status, headers },
        block: Block::default(),
    }
}

impl<S: Read> Client<S> {
    /// The next item, or `None` once the server ended the stream (a partial line or block
    /// left at the end is dropped, as the standard says).
    pub fn next(&mut self) -> Option<Item> {
        loop {
            let line = read_line(&mut self.reader)?;
            if let Some(item) = on_line(&mut self.block, &line) {
                return Some(item);
            }
        }
    }

    /// The next event, skipping comments and `retry:`.
    pub fn next_event(&mut self) -> Option<Item> {
        loop {
            match self.next()? {
                item @ Item::Event { .. } => return Some(item),
                _ => continue,
            }
        }
    }

    /// Every item until the end of the stream.
    pub fn read_to_end(&mut self) -> Vec<Item> {
        std::iter::from_fn(|| self.next()).collect()
    }

    /// The body bytes parsed since the last call (bytes read ahead are kept for the next).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let unread = self.reader.buffer().len();
        let seen = &mut self.reader.get_mut().seen;
        let keep = seen.split_off(seen.len() - unread);
        std::mem::replace(seen, keep)
    }

    /// The stream under the client (e.g. to write to it, or to drop the connection).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.reader.get_mut().inner
    }
}

/// Every item of a whole stream body: the reference parser of the property tests.
pub fn parse_all(body: &[u8]) -> Vec<Item> {
    let mut reader = BufReader::new(body);
    let mut block = Block::default();
    let mut items = Vec::new();
    while let Some(line) = read_line(&mut reader) {
        items.extend(on_line(&mut block, &line));
    }
    items
}

/// One line, ended by CRLF, a lone CR or a lone LF; `None` at the end of the stream (a line
/// without its end is not a line). A read timeout is a test failure.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    loop {
        match next_byte(reader)? {
            b'\n' => break,
            b'\r' => {
                if peek_byte(reader) == Some(b'\n') {
                    reader.consume(1);
                }
                break;
            }
            b => line.push(b),
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn next_byte(reader: &mut impl BufRead) -> Option<u8> {
    let b = peek_byte(reader)?;
    reader.consume(1);
    Some(b)
}

fn peek_byte(reader: &mut impl BufRead) -> Option<u8> {
    loop {
        match reader.fill_buf() {
            Ok(buf) => return buf.first().copied(),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no event-stream bytes within {:?}", DEADLINE)
            }
            // A reset ends the stream as an EOF does, for these tests.
            Err(_) => return None,
        }
    }
}

/// The standard's steps for one line.
fn on_line(block: &mut Block, line: &str) -> Option<Item> {
    if line.is_empty() {
        let block = std::mem::take(block);
        if !block.has_data {
            return None;
        }
        let mut data = block.data;
        data.pop();
        return Some(Item::Event { id: block.id, data });
    }
    if let Some(comment) = line.strip_prefix(':') {
        return Some(Item::Comment(comment.to_owned()));
    }
    let (field, value) = match line.find(':') {
        Some(at) => {
            let value = &line[at + 1..];
            (&line[..at], value.strip_prefix(' ').unwrap_or(value))
        }
        None => (line, ""),
    };
    match field {
        "data" => {
            block.data.push_str(value);
            block.data.push('\n');
            block.has_data = true;
        }
        "id" if !value.contains('\0') => block.id = Some(value.to_owned()),
        "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            return value.parse().ok().map(Item::Retry);
        }
        _ => {}
    }
    None
}
