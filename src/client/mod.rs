//! The channel client: event-stream reader, POST sender, reconnect policy.
