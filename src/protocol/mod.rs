//! The SSE channel wire protocol (see `docs/PROTOCOL.md`), free of I/O.
//!
//! Everything here works on bytes, strings and numbers so it can be tested and
//! fuzzed without sockets: the server and client modules wrap it with I/O.

pub mod event;
pub mod parser;
pub mod query;
pub mod reorder;

pub use event::{decode_message_body, encode_message_body};
pub use parser::{Event, EventStreamParser};
pub use query::{ChannelQuery, QueryError};
pub use reorder::{Offer, ReorderBuffer};

/// The query parameter naming the client: package:sse's `sseClientId`.
pub const CLIENT_ID_PARAM: &str = "sseClientId";
/// The query parameter numbering a client→server POST.
pub const MESSAGE_ID_PARAM: &str = "messageId";
/// The `event:` type of a control instruction.
pub const CONTROL_EVENT: &str = "control";
/// The only control data ever sent: package:sse clients throw on any other.
pub const CONTROL_CLOSE_DATA: &str = "close";
