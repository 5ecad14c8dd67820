//! emberws: an embedded-style, event-driven WebSocket server core (RFC 6455) on one
//! [`mio`] poll loop — no async runtime, one thread, bounded memory per connection.
//!
//! **Layer 1, [`proto`]**, is the protocol as pure state machines over byte slices: the
//! HTTP/1.1 upgrade, the frame header codec, unmasking, UTF-8 validation, message assembly
//! and close codes, and the Server-Sent Events encoding of a message. It never touches a socket, a clock or the heap beyond what the caller
//! lends, so tests, fuzzers and benches drive it directly.
//!
//! **Layer 2, the connection** (`conn`, internal), is one peer: its phase (`Connecting →
//! Open → Closing → Closed`, the close steps in one enum), the whole handshake (parse,
//! validate, Origin, the application's decision, the answer), its outbox (the one encoder of
//! outgoing frames and the one owner of their order) and its deadlines. Still no syscalls:
//! bytes and `now` come in; events, bytes to write and the next deadline go out.
//!
//! **The transport** (internal) is the seam between a socket and a connection: bytes in,
//! bytes out, readiness interest. TCP today, an in-memory pipe for [`testing`].
//!
//! **Layer 3, [`server`]**, is the loop and the only place that does I/O: `mio::Poll`, the
//! listeners, a `Slab` of connections, admission, the ready FIFO (each connection once per
//! turn, within a byte and frame budget), a timing wheel, the topic table and the bounded
//! inbox that other threads reach through a [`ServerHandle`].
//!
//! **Layer 4** is the API: [`Config`], the [`Handler`] trait with its per-connection
//! `State`, the [`Ctx`] handed to its callbacks, [`ServerHandle`], and [`testing`] to drive
//! a handler without sockets.
//!
//! # The pipeline
//!
//! ```text
//! socket ─transport::read─▶ ① proto::handshake::parse ─▶ Conn::answer_head ─▶ Handler::on_upgrade
//!    ─▶ ② proto::response (101 / HTTP) ─▶ ③ FrameHeader::parse ─▶ ④ mask::unmask
//!    ─▶ ⑤ utf8::Validator::push ─▶ ⑥ message::Assembler ─▶ Handler::on_message
//! Ctx::send ─▶ ⑦ Outbox (FrameHead, order, backpressure) ─▶ ⑧ WriteQueue ─transport::write─▶ socket
//! ```
//!
//! A plain `GET` that [`Handler::on_event_stream`] claims becomes an event stream after ①:
//! `proto::response::event_stream` answers it, nothing the peer sends is parsed, and
//! `Ctx::send` goes through `proto::sse::encode` instead of the frame encoder to the same
//! ⑦ and ⑧.
//!
//! # Memory per connection
//!
//! - idle: one slab entry (the connection record with its socket and timer slot) and one
//!   entry of the handler's states, no buffer: [`server::idle_connection_bytes`];
//! - worst case: idle + [`Config::max_message_size`] + max([`Config::max_backpressure`],
//!   [`Config::max_send_size`]) ([`Config::worst_case_connection_bytes`]);
//! - server worst case: [`Config::max_connections`] × worst case + the fixed loop buffers
//!   ([`Config::fixed_bytes`]: the read buffer, the write batches, the spare buffers, the
//!   inbox and the timer wheel).
//!
//! # Example: an echo server
//!
//! ```no_run
//! use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = ();
//!
//!     fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
//!         Decision::Accept(())
//!     }
//!
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
//!         ctx.send(msg);
//!     }
//! }
//!
//! fn main() -> Result<(), emberws::Error> {
//!     let addr = "127.0.0.1:9001".parse().unwrap();
//!     Server::bind(addr, Config::default(), Echo)?.run()
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod config;
#[doc(hidden)]
pub mod conn;
pub mod ctx;
pub mod error;
pub mod handle;
pub mod handler;
#[doc(hidden)]
pub mod pool;
pub mod proto;
pub mod server;
pub mod stats;
pub mod testing;
mod transport;

pub use config::{Config, SlowConsumer};
pub use ctx::{Ctx, Delivery, Subscribed};
pub use error::Error;
pub use handle::{HandleError, ServerHandle};
pub use handler::{Decision, Handler, HttpRequest, Kind, Message, Protocol, Response, SendStatus};
pub use proto::CloseCode;
pub use server::inbox::ConnId;
pub use server::topics::topic_matches;
pub use server::Server;
pub use stats::Stats;
/// The server's TLS layer over memory, for the fuzzer (`fuzz/`): not part of the API.
#[cfg(feature = "tls")]
#[doc(hidden)]
pub use transport::tls::Probe as TlsProbe;
