//! emberws: an embedded-style, event-driven WebSocket server core (RFC 6455) on one
//! [`mio`] poll loop — no async runtime, one thread, bounded memory per connection.
//!
//! **Layer 1, [`proto`]**, is the protocol as pure state machines over byte slices: the
//! HTTP/1.1 upgrade, the frame header codec, unmasking, UTF-8 validation, message assembly
//! and close codes. It never touches a socket, a clock or the heap beyond what the caller
//! lends, so tests, fuzzers and benches drive it directly.
//!
//! **Layer 2, [`conn`]**, is one connection: its readyState (`Connecting → Open → Closing →
//! Closed`), the buffer it borrows from the [`pool`] only while a head or message is
//! incomplete, its bounded write queue and its deadlines. Still no syscalls: bytes and `now`
//! come in, events, bytes to write and the next deadline go out.
//!
//! **Layer 3, [`server`]**, is the loop and the only place that does I/O: `mio::Poll`, the
//! listener, `Slab` of connections, a timing wheel, the topic table and the inbox that other
//! threads reach through a [`ServerHandle`].
//!
//! **Layer 4** is the API: [`Config`], the [`Handler`] trait, the [`Ctx`] handed to its
//! callbacks, and [`ServerHandle`].
//!
//! # The pipeline
//!
//! ```text
//! socket ─server::io::read─▶ ① proto::handshake::parse ─▶ ② proto::response ─▶ ③ FrameHeader::parse
//!    ─▶ ④ mask::unmask ─▶ ⑤ utf8::Validator::push ─▶ ⑥ message::Assembler ─▶ Handler::on_message
//! Ctx::send ─▶ ⑦ FrameHeader::encode ─▶ ⑧ WriteQueue::push ─server::io::write─▶ socket
//! ```
//!
//! # Memory per connection
//!
//! - idle: the connection record (216 bytes with its socket and timer slot) and no buffer;
//! - worst case: idle + [`Config::max_message_size`] + [`Config::max_backpressure`];
//! - server worst case: [`Config::max_connections`] × worst case + the fixed loop buffers
//!   ([`Config::read_buffer_size`] and the timer wheel).
//!
//! # Example: an echo server
//!
//! ```no_run
//! use emberws::{Config, Ctx, Handler, Message, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
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
pub use handler::{Decision, Handler, HttpRequest, Message, Protocol, Response, SendStatus};
pub use proto::CloseCode;
pub use server::inbox::ConnId;
pub use server::topics::topic_matches;
pub use server::Server;
pub use stats::Stats;
