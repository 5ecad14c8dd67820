//! Echo against a real, independent client library (tungstenite): sizes, fragments, ping/pong,
//! and clean closes both ways.

mod util;

use emberws::{CloseCode, Config, Ctx, Decision, Handler, HttpRequest, Message as Msg};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::Message;
use util::clients::{connect, Client};
use util::{spawn_server, Echo};

fn echo_round(ws: &mut Client, msg: Message) {
    ws.send(msg.clone()).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            got => {
                assert_eq!(got.len(), msg.len());
                assert!(got == msg, "echo differs for a {}-byte message", msg.len());
                return;
            }
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[test]
fn echoes_text_binary_and_empty() {
    let server = spawn_server(Config::default(), Echo);
    let mut ws = connect(&server);
    echo_round(&mut ws, Message::text("hello"));
    echo_round(&mut ws, Message::text("héllo wörld ✓ 🦀"));
    echo_round(&mut ws, Message::binary(vec![0u8, 1, 2, 255]));
    echo_round(&mut ws, Message::text(""));
    echo_round(&mut ws, Message::binary(Vec::new()));
}

#[test]
fn echoes_every_length_encoding_boundary() {
    let server = spawn_server(Config::default().max_message_size(1 << 20), Echo);
    let mut ws = connect(&server);
    for n in [0, 1, 125, 126, 127, 65535, 65536, 65537, 300_000] {
        echo_round(&mut ws, Message::binary(pattern(n)));
        let text: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        echo_round(&mut ws, Message::text(text));
    }
}

#[test]
fn echoes_multi_mebibyte_messages() {
    let server = spawn_server(Config::default().max_message_size(16 << 20), Echo);
    let mut ws = connect(&server);
    echo_round(&mut ws, Message::binary(pattern(5 << 20)));
    let text = "ünïcødé ".repeat((3 << 20) / 10);
    echo_round(&mut ws, Message::text(text));
}

#[test]
fn reassembles_fragmented_messages_with_interleaved_ping() {
    let server = spawn_server(Config::default(), Echo);
    let mut ws = connect(&server);
    let parts: [&[u8]; 3] = [b"frag", "mé".as_bytes(), b"nted"];
    ws.send(Message::Frame(Frame::message(
        parts[0].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    // A text message split inside a two-byte character, with a ping in the middle.
    ws.send(Message::Frame(Frame::message(
        parts[1][..2].to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.send(Message::Ping(b"mid".to_vec().into())).unwrap();
    ws.send(Message::Frame(Frame::message(
        parts[1][2..].to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        parts[2].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    let mut got_pong = false;
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"mid");
                got_pong = true;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), "fragménted");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        got_pong,
        "the ping inside the message was not answered before the message"
    );
}

#[test]
fn answers_ping_with_same_payload_and_ignores_unsolicited_pong() {
    let server = spawn_server(Config::default(), Echo);
    let mut ws = connect(&server);
    ws.send(Message::Pong(b"unsolicited".to_vec().into()))
        .unwrap();
    ws.send(Message::Ping(pattern(125).into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], &pattern(125)[..]),
        other => panic!("expected a pong, got {other:?}"),
    }
    echo_round(&mut ws, Message::text("still here"));
}

/// Reads until the server ends the connection after the closing handshake, with nothing
/// but a close frame on the way; returns the close frame's payload, if it had one.
fn read_close_frame(ws: &mut Client) -> Option<CloseFrame> {
    let mut got = None;
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => got = frame,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => return got,
            Err(e) => panic!("close did not complete cleanly: {e}"),
        }
    }
}

#[test]
fn client_initiated_close_is_echoed_and_server_closes_tcp() {
    let server = spawn_server(Config::default(), Echo);
    let mut ws = connect(&server);
    ws.close(Some(CloseFrame {
        code: 4001.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    let echoed = read_close_frame(&mut ws);
    assert_eq!(echoed.map(|f| u16::from(f.code)), Some(4001));
}

/// Closes the connection after the first message, with the code it names.
struct Closer;

impl Handler for Closer {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        let code: u16 = std::str::from_utf8(msg.as_bytes())
            .unwrap()
            .parse()
            .unwrap();
        match CloseCode::new(code) {
            Some(code) => {
                ctx.close(code, "as asked");
            }
            // A code that may not be sent: refused, and the server says so.
            None => {
                ctx.send_text("refused");
            }
        }
    }
}

#[test]
fn server_initiated_close_completes_the_handshake() {
    let server = spawn_server(Config::default(), Closer);
    let mut ws = connect(&server);
    ws.send(Message::text("4242")).unwrap();
    let frame = read_close_frame(&mut ws).expect("no close frame");
    assert_eq!(u16::from(frame.code), 4242);
    assert_eq!(frame.reason.as_str(), "as asked");
}

#[test]
fn many_clients_at_once() {
    let server = spawn_server(Config::default(), Echo);
    let mut clients: Vec<Client> = (0..50).map(|_| connect(&server)).collect();
    for round in 0..5 {
        for (i, ws) in clients.iter_mut().enumerate() {
            ws.send(Message::text(format!("{i}:{round}"))).unwrap();
        }
        for (i, ws) in clients.iter_mut().enumerate() {
            assert_eq!(ws.read().unwrap(), Message::text(format!("{i}:{round}")));
        }
    }
}
