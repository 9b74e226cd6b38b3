//! Which stream each message of a session's server goes on.
//!
//! A session has one stream per client request answered as a stream (the
//! POST's response) and one standalone stream (the `GET`). The rule:
//! - a response goes on the stream of the request it answers, and when it
//!   is that stream's last outstanding request the stream ends after it;
//! - `notifications/progress` goes on the stream of the request that asked
//!   for progress under its token;
//! - any other message of the server (a log line, a sampling request, a
//!   list change) goes on the stream of the one outstanding request when
//!   there is exactly one: stdio tells nothing about what a message relates
//!   to, and with one request in flight that is almost surely it (a
//!   tool's log lines, its sampling request); with none or several it is
//!   tied to no request and goes on the standalone stream;
//! - a response to no outstanding request goes nowhere (the client
//!   cancelled it, or its stream is gone), and is reported.

use std::collections::{BTreeMap, HashMap};

use super::message::{Kind, Message, RequestId};

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// On stream `stream`; `last`: it answers that stream's last
    /// outstanding request, and the stream ends after it.
    Stream { stream: u32, last: bool },
    /// On the standalone (`GET`) stream.
    Standalone,
    /// Nowhere: a response to no outstanding request.
    Nowhere,
}

/// A request id already in flight in the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request id {0} is already in flight in this session")]
pub struct DuplicateId(pub RequestId);

#[derive(Debug)]
struct Pending {
    stream: u32,
    progress: Option<String>,
}

/// A session's routing table. See the module docs.
#[derive(Debug, Default)]
pub struct Router {
    /// A process shared by many clients (the per-request era): a message
    /// goes only where it says it belongs, never "with the one request in
    /// flight", which could be another client's.
    shared: bool,
    requests: HashMap<RequestId, Pending>,
    progress: HashMap<String, u32>,
    /// Streams with requests awaiting their response, and how many.
    outstanding: BTreeMap<u32, usize>,
}

impl Router {
    /// The table of a process that many clients share (see `shared`).
    pub fn shared() -> Self {
        Self { shared: true, ..Self::default() }
    }

    /// Client request `msg` is answered on `stream`.
    pub fn start(&mut self, stream: u32, msg: &Message) -> Result<(), DuplicateId> {
        let Kind::Request { id, .. } = &msg.kind else { return Ok(()) };
        if self.requests.contains_key(id) {
            return Err(DuplicateId(id.clone()));
        }
        let progress = msg.progress_token();
        if let Some(token) = &progress {
            self.progress.insert(token.clone(), stream);
        }
        self.requests.insert(id.clone(), Pending { stream, progress });
        *self.outstanding.entry(stream).or_default() += 1;
        Ok(())
    }

    /// Where message `msg` of the server goes.
    pub fn route(&mut self, msg: &Message) -> Route {
        if let Kind::Response { id } = &msg.kind {
            return match self.finish(id) {
                Some((stream, last)) => Route::Stream { stream, last },
                None => Route::Nowhere,
            };
        }
        if let Some(stream) = msg.progress_token().and_then(|t| self.progress.get(&t)) {
            return Route::Stream { stream: *stream, last: false };
        }
        if let Some(p) = msg.subscription_id().and_then(|id| self.requests.get(&id)) {
            return Route::Stream { stream: p.stream, last: false };
        }
        if self.shared {
            return Route::Nowhere;
        }
        let mut streams = self.outstanding.keys();
        match (streams.next(), streams.next()) {
            (Some(only), None) => Route::Stream { stream: *only, last: false },
            _ => Route::Standalone,
        }
    }

    /// Forgets request `id`: answered, or cancelled by the client. Returns
    /// its stream and whether that stream has nothing left to wait for.
    pub fn finish(&mut self, id: &RequestId) -> Option<(u32, bool)> {
        let p = self.requests.remove(id)?;
        if let Some(token) = p.progress {
            self.progress.remove(&token);
        }
        let left = self.outstanding.get_mut(&p.stream).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            self.outstanding.remove(&p.stream);
        }
        Some((p.stream, left.unwrap_or(0) == 0))
    }

    /// Stream `stream` is gone before its answers: forgets its requests and
    /// returns them (nobody can receive their answers any more).
    pub fn stream_gone(&mut self, stream: u32) -> Vec<RequestId> {
        if self.outstanding.remove(&stream).is_none() {
            return Vec::new();
        }
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, p)| p.stream == stream)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(p) = self.requests.remove(id)
                && let Some(token) = p.progress
            {
                self.progress.remove(&token);
            }
        }
        ids
    }

    /// Requests awaiting their response.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Message {
        Message::parse(s.as_bytes()).unwrap()
    }

    fn call(id: u64, token: Option<&str>) -> Message {
        let meta =
            token.map_or(String::new(), |t| format!(r#","_meta":{{"progressToken":"{t}"}}"#));
        m(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"x"{meta}}}}}"#
        ))
    }

    fn answer(id: u64) -> Message {
        m(&format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#))
    }

    fn progress(token: &str) -> Message {
        m(&format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"{token}","progress":1}}}}"#
        ))
    }

    fn log() -> Message {
        m(
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#,
        )
    }

    #[test]
    fn responses_go_to_their_request_and_end_its_stream() {
        let mut r = Router::default();
        r.start(1, &call(10, None)).unwrap();
        r.start(2, &call(11, None)).unwrap();
        assert_eq!(r.route(&answer(11)), Route::Stream { stream: 2, last: true });
        assert_eq!(r.route(&answer(11)), Route::Nowhere, "answered once");
        assert_eq!(r.route(&answer(99)), Route::Nowhere);
        assert_eq!(r.route(&answer(10)), Route::Stream { stream: 1, last: true });
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn progress_follows_its_token_whatever_else_is_in_flight() {
        let mut r = Router::default();
        r.start(1, &call(1, Some("a"))).unwrap();
        r.start(2, &call(2, Some("b"))).unwrap();
        assert_eq!(r.route(&progress("b")), Route::Stream { stream: 2, last: false });
        assert_eq!(r.route(&progress("a")), Route::Stream { stream: 1, last: false });
        assert_eq!(r.route(&answer(1)), Route::Stream { stream: 1, last: true });
        // A token no longer in flight: the general rule.
        assert_eq!(r.route(&progress("a")), Route::Stream { stream: 2, last: false });
    }

    #[test]
    fn other_messages_go_with_the_one_request_in_flight_else_standalone() {
        let mut r = Router::default();
        assert_eq!(r.route(&log()), Route::Standalone, "nothing in flight");
        r.start(1, &call(1, None)).unwrap();
        assert_eq!(r.route(&log()), Route::Stream { stream: 1, last: false });
        let sampling = m(r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage"}"#);
        assert_eq!(r.route(&sampling), Route::Stream { stream: 1, last: false });
        r.start(2, &call(2, None)).unwrap();
        assert_eq!(r.route(&log()), Route::Standalone, "several in flight: related to none");
    }

    #[test]
    fn a_shared_process_messages_go_only_where_they_say() {
        let mut r = Router::shared();
        let listen = m(r#"{"jsonrpc":"2.0","id":"ssechan-1","method":"subscriptions/listen"}"#);
        r.start(1, &listen).unwrap();
        r.start(2, &call(2, Some("t"))).unwrap();
        let note = m(
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"ssechan-1"}}}"#,
        );
        assert_eq!(r.route(&note), Route::Stream { stream: 1, last: false });
        assert_eq!(r.route(&progress("t")), Route::Stream { stream: 2, last: false });
        let _ = r.finish(&listen.kind_id());
        assert_eq!(r.route(&log()), Route::Nowhere, "never another client's stream");
        assert_eq!(r.route(&note), Route::Nowhere);
    }

    #[test]
    fn duplicate_ids_are_refused_and_cancels_and_lost_streams_forget() {
        let mut r = Router::default();
        r.start(1, &call(1, Some("t"))).unwrap();
        assert_eq!(r.start(2, &call(1, None)), Err(DuplicateId(call(1, None).kind_id())));
        r.start(1, &call(2, None)).unwrap();
        assert_eq!(r.finish(&call(1, None).kind_id()), Some((1, false)));
        assert_eq!(r.stream_gone(1), vec![call(2, None).kind_id()]);
        assert_eq!(r.stream_gone(1), vec![]);
        assert_eq!(r.route(&progress("t")), Route::Standalone);
        assert_eq!(r.in_flight(), 0);
    }

    proptest::proptest! {
        /// Whatever the order of requests, answers, cancels and lost
        /// streams: each request is answered at most once, on its own
        /// stream, and a stream ends exactly when its last request does.
        #[test]
        fn each_request_is_answered_once_on_its_stream(
            ops in proptest::collection::vec((0u8..4, 0u64..6, 1u32..4), 0..60)
        ) {
            let mut r = Router::default();
            // The model: request id -> stream.
            let mut live: std::collections::BTreeMap<u64, u32> = Default::default();
            for (op, id, stream) in ops {
                match op {
                    0 => {
                        let started = r.start(stream, &call(id, None));
                        proptest::prop_assert_eq!(started.is_ok(), !live.contains_key(&id));
                        live.entry(id).or_insert(stream);
                    }
                    1 => {
                        let want = live.remove(&id).map(|s| Route::Stream {
                            stream: s,
                            last: !live.values().any(|o| *o == s),
                        });
                        proptest::prop_assert_eq!(r.route(&answer(id)), want.unwrap_or(Route::Nowhere));
                    }
                    2 => {
                        let gone: Vec<u64> =
                            live.iter().filter(|(_, s)| **s == stream).map(|(i, _)| *i).collect();
                        live.retain(|_, s| *s != stream);
                        let mut got: Vec<u64> = r
                            .stream_gone(stream)
                            .iter()
                            .map(|i| i.as_json().parse().unwrap())
                            .collect();
                        got.sort();
                        proptest::prop_assert_eq!(got, gone);
                    }
                    _ => {
                        let streams: std::collections::BTreeSet<u32> =
                            live.values().copied().collect();
                        let streams: Vec<u32> = streams.into_iter().collect();
                        let want = match streams.as_slice() {
                            [only] => Route::Stream { stream: *only, last: false },
                            _ => Route::Standalone,
                        };
                        proptest::prop_assert_eq!(r.route(&log()), want);
                    }
                }
                proptest::prop_assert_eq!(r.in_flight(), live.len());
            }
        }

        /// Any bytes: a message or a reason, never a panic.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Message::parse(&bytes);
        }
    }

    impl Message {
        fn kind_id(&self) -> RequestId {
            match &self.kind {
                Kind::Request { id, .. } | Kind::Response { id } => id.clone(),
                Kind::Notification { .. } => panic!("no id"),
            }
        }
    }
}
