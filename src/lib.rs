//! ssechan: serve, probe and benchmark bi-directional SSE channels.
//!
//! The protocol is Dart `package:sse`'s (see `docs/PROTOCOL.md`): the server pushes
//! JSON-encoded strings down a `text/event-stream`, the client POSTs messages
//! numbered by `messageId`. [`protocol`] is the wire format without I/O,
//! [`reader`] the reconnecting event-stream reader without I/O, [`server`]
//! hosts channels, [`client`] connects to them.
//!
//! An echo server:
//!
//! ```no_run
//! use ssechan::server::{ConnectionEvent, Server, ServerConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let mut server = Server::bind("127.0.0.1:0", ServerConfig::default()).await?;
//! while let Some(mut conn) = server.accept().await {
//!     tokio::spawn(async move {
//!         while let Some(ev) = conn.recv().await {
//!             if let ConnectionEvent::Message(m) = ev {
//!                 let _ = conn.send(&m);
//!             }
//!         }
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! A client:
//!
//! ```no_run
//! use ssechan::client::{ChannelClient, ClientConfig, ClientEvent, Mode, client_id};
//!
//! # async fn run(url: &str) -> Result<(), ssechan::client::ClientError> {
//! let config = ClientConfig::new(url, Mode::Channel { client_id: client_id(None, None)? })?;
//! let (client, mut events) = ChannelClient::start(config)?;
//! client.send("hello").await?;
//! while let Some(ev) = events.recv().await {
//!     match ev {
//!         ClientEvent::Message(m) => println!("{m}"),
//!         ev if ev.is_terminal() => break,
//!         _ => {} // Open, Disconnected, Reconnecting, Resumed…
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod bench;
pub mod check;
pub mod cli;
pub mod client;
pub mod connect;
pub mod exit;
pub mod generate;
pub mod junit;
pub mod lines;
pub mod logging;
pub mod mcp;
pub mod protocol;
pub mod reader;
pub mod serve;
pub mod server;
pub mod sys;
pub mod text;
pub mod web;

use std::process::ExitCode;

/// Runs a parsed command line; the exit status follows the documented codes
/// (0 fine, 1 failed, 2 usage error or unreachable target).
pub async fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
        cli::Command::Connect(args) => connect::run(args, cli.quiet).await,
        cli::Command::Bench(args) => bench::run(args).await,
        cli::Command::Check(args) => check::run(args).await,
        cli::Command::Generate(args) => generate::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

/// docs/library.md: its examples are compiled and run as doc tests, so the
/// guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryGuide;
