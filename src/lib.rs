//! temporary
#![forbid(unsafe_code)]
pub mod config;
pub mod conn;
pub mod ctx;
pub mod error;
pub mod handle;
pub mod handler;
pub mod pool;
pub mod proto;
pub mod server;
pub mod stats;

pub use config::{Config, SlowConsumer};
pub use ctx::Ctx;
pub use error::Error;
pub use handle::{ServerHandle, Stopped};
pub use handler::{Decision, Handler, HttpRequest, Message, Response};
pub use proto::CloseCode;
pub use server::inbox::ConnId;
pub use server::Server;
pub use stats::Stats;
