//! ssechan: serve, probe and benchmark bi-directional SSE channels.
//!
//! The protocol is Dart `package:sse`'s (see `PROTOCOL.md`): the server pushes
//! JSON-encoded strings down a `text/event-stream`, the client POSTs messages
//! numbered by `messageId`. [`protocol`] is the wire format without I/O,
//! [`server`] hosts channels, [`client`] connects to them.

pub mod protocol;
