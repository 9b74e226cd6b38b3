//! The events of a session's request streams, kept (bounded) after the
//! stream ended with its response: a stream's channel closes once its
//! response is written, and a client whose connection was cut before
//! that write reached it (the server notices a cut only when a later
//! write fails) resumes with `Last-Event-ID` and gets the rest from here.
//! Plain values; the session holds one under its lock.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Answered streams kept at most, whatever their size.
const MAX_STREAMS: usize = 256;

/// One stream's events, the oldest first; ids follow one another.
#[derive(Debug, Default)]
struct Log {
    /// The id of the first event kept.
    first: u64,
    events: VecDeque<Bytes>,
    bytes: usize,
}

impl Log {
    fn next_id(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

/// Every stream of one session: open ones, and answered ones kept.
#[derive(Debug)]
pub struct Answered {
    open: HashMap<u32, Log>,
    done: VecDeque<(u32, Log)>,
    bytes: usize,
    max_bytes: usize,
}

impl Answered {
    /// Events kept for all streams together within `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self { open: HashMap::new(), done: VecDeque::new(), bytes: 0, max_bytes }
    }

    /// Stream `stream` opened; its first event will have id `first`.
    pub fn opened(&mut self, stream: u32, first: u64) {
        self.open.insert(stream, Log { first, ..Log::default() });
    }

    /// The stream's channel took `data` (an encoded `data:` tail) as its
    /// next event.
    pub fn sent(&mut self, stream: u32, data: &Bytes) {
        let Some(log) = self.open.get_mut(&stream) else { return };
        log.events.push_back(data.clone());
        log.bytes += data.len();
        self.bytes += data.len();
        self.trim(Some(stream));
    }

    /// The stream's response was its last event: kept for a resume.
    pub fn answered(&mut self, stream: u32) {
        if let Some(log) = self.open.remove(&stream) {
            self.done.push_back((stream, log));
            self.trim(None);
        }
    }

    /// The stream ended without its answer being kept (cancelled, or its
    /// channel is gone): nothing to keep.
    pub fn forget(&mut self, stream: u32) {
        if let Some(log) = self.open.remove(&stream) {
            self.bytes -= log.bytes;
        }
    }

    /// The events of answered stream `stream` after id `last`, as an
    /// event stream's bytes; `None` when it is not kept, no longer from
    /// right after `last`, or nothing follows `last` (the answer was
    /// taken).
    pub fn after(&self, stream: u32, last: u64) -> Option<Bytes> {
        let (_, log) = self.done.iter().find(|(s, _)| *s == stream)?;
        if last.checked_add(1)? < log.first || last.checked_add(1)? >= log.next_id() {
            return None;
        }
        let skip = (last + 1 - log.first) as usize;
        let mut out = Vec::new();
        for (i, data) in log.events.iter().enumerate().skip(skip) {
            out.extend_from_slice(format!("id: {}\n", log.first + i as u64).as_bytes());
            out.extend_from_slice(data);
        }
        Some(Bytes::from(out))
    }

    /// Within the bounds: the oldest answered streams go first, then the
    /// oldest events of open streams (`keep`: the one just added to
    /// goes last).
    fn trim(&mut self, keep: Option<u32>) {
        while self.done.len() > MAX_STREAMS
            || (self.bytes > self.max_bytes && !self.done.is_empty())
        {
            if let Some((_, log)) = self.done.pop_front() {
                self.bytes -= log.bytes;
            }
        }
        while self.bytes > self.max_bytes {
            let other = self
                .open
                .iter()
                .find(|(s, l)| Some(**s) != keep && !l.events.is_empty())
                .map(|(s, _)| *s);
            let Some(log) = other.or(keep).and_then(|s| self.open.get_mut(&s)) else { break };
            let Some(old) = log.events.pop_front() else { break };
            log.first += 1;
            log.bytes -= old.len();
            self.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Bytes {
        Bytes::from(format!("data: {s}\n\n"))
    }

    #[test]
    fn an_answered_stream_is_resumed_after_any_of_its_ids() {
        let mut a = Answered::new(1 << 20);
        a.opened(3, 100);
        for e in ["", "progress", "answer"] {
            a.sent(3, &ev(e));
        }
        assert_eq!(a.after(3, 100), None, "not answered yet: the channel resumes it");
        a.answered(3);
        let tail = a.after(3, 100).unwrap();
        assert_eq!(tail, "id: 101\ndata: progress\n\nid: 102\ndata: answer\n\n");
        assert_eq!(a.after(3, 101).unwrap(), "id: 102\ndata: answer\n\n");
        assert_eq!(a.after(3, 102), None, "nothing after the answer: it was taken");
        assert_eq!(a.after(3, 103), None, "an id it never gave");
        assert_eq!(a.after(3, 98), None, "an id before the stream");
        assert_eq!(a.after(4, 100), None);
    }

    #[test]
    fn bounds_drop_the_oldest_and_say_so() {
        let mut a = Answered::new(40);
        a.opened(1, 10);
        a.sent(1, &ev("first answer"));
        a.answered(1);
        a.opened(2, 20);
        a.sent(2, &ev("second answer"));
        a.answered(2);
        assert_eq!(a.after(1, 9), None, "the oldest answered stream went first");
        assert!(a.after(2, 19).is_some());
        // An open stream past the bound loses its oldest events: a resume
        // from before them finds a gap, and gets nothing from here.
        let mut a = Answered::new(40);
        a.opened(5, 50);
        for e in ["one event of", "two events of", "three"] {
            a.sent(5, &ev(e));
        }
        a.answered(5);
        assert_eq!(a.after(5, 49), None);
        assert_eq!(a.after(5, 51).unwrap(), "id: 52\ndata: three\n\n");
        a.forget(5);
        let mut a = Answered::new(1 << 20);
        for s in 0..(MAX_STREAMS as u32 + 1) {
            a.opened(s, u64::from(s) << 32);
            a.sent(s, &ev(""));
            a.sent(s, &ev("x"));
            a.answered(s);
        }
        assert_eq!(a.after(0, 0), None);
        assert!(a.after(1, 1 << 32).is_some());
    }
}
