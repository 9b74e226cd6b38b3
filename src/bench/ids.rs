//! Following a stream's `id:` sequence across reconnects, for the id
//! forms that carry one: integers (`ssechan serve`, most servers),
//! `time:seq` (nchan: seconds and a tag that restarts at 0 each second),
//! and a number after a fixed prefix (`msg-17`, `evt_0042`). Ids of any
//! other form cannot be ordered: they are counted, and the report says the
//! gaps were not checked instead of printing zeros. Pure bookkeeping.

use std::cmp::Ordering;

/// An id that carries a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Int(u64),
    /// nchan's `seconds:tag`.
    TimeSeq(u64, u64),
    /// A fixed prefix and a number.
    Prefixed(String, u64),
}

/// The id forms a stream may use, as the report names them.
pub const FORMAT_INTEGER: &str = "integer";
pub const FORMAT_TIME_SEQ: &str = "time:seq";
pub const FORMAT_PREFIXED: &str = "prefix+number";
/// Streams of one run whose ids had different forms.
pub const FORMAT_MIXED: &str = "mixed";

impl Key {
    fn parse(id: &str) -> Option<Key> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(id) {
            return id.parse().ok().map(Key::Int);
        }
        if let Some((t, s)) = id.split_once(':')
            && digits(t)
            && digits(s)
        {
            return Some(Key::TimeSeq(t.parse().ok()?, s.parse().ok()?));
        }
        let prefix = id.trim_end_matches(|c: char| c.is_ascii_digit());
        if prefix.len() < id.len() && !prefix.is_empty() {
            return Some(Key::Prefixed(prefix.to_string(), id[prefix.len()..].parse().ok()?));
        }
        None
    }

    fn format(&self) -> &'static str {
        match self {
            Key::Int(_) => FORMAT_INTEGER,
            Key::TimeSeq(..) => FORMAT_TIME_SEQ,
            Key::Prefixed(..) => FORMAT_PREFIXED,
        }
    }

    /// How `self` (the next id) follows `last`: its order, and how many ids
    /// were skipped in between when that can be known. `None` when the two
    /// are not of one sequence (another form or prefix).
    fn follow(&self, last: &Key) -> Option<(Ordering, u64)> {
        let step = |a: u64, b: u64| (b.cmp(&a), b.saturating_sub(a).saturating_sub(1));
        match (last, self) {
            (Key::Int(a), Key::Int(b)) => Some(step(*a, *b)),
            (Key::Prefixed(p, a), Key::Prefixed(q, b)) if p == q => Some(step(*a, *b)),
            (Key::TimeSeq(t1, s1), Key::TimeSeq(t2, s2)) => Some(match t2.cmp(t1) {
                Ordering::Equal => step(*s1, *s2),
                // A new second: its tags begin at 0, so tag N means N
                // events of that second were skipped.
                Ordering::Greater => (Ordering::Greater, *s2),
                Ordering::Less => (Ordering::Less, 0),
            }),
            _ => None,
        }
    }
}

/// Follows the id sequence of one stream across reconnects.
///
/// A stream that is re-opened either resumes (its first id follows the last
/// one seen, or jumps past it: a gap) or is a fresh connection whose ids
/// begin again (at or below the last one seen). A fresh connection is not
/// disorder, and the events sent while it was down are unknowable from
/// here, so it is counted as a restart and the sequence starts over.
#[derive(Debug, Default)]
pub struct IdTracker {
    last: Option<Key>,
    /// The next id is the first of a re-opened stream.
    reopened: bool,
    pub missing: u64,
    pub gaps: u64,
    pub backwards: u64,
    pub restarts: u64,
    /// Events whose id has no sequence, or breaks the form the stream
    /// began with.
    pub unordered: u64,
    /// Events without an id.
    pub absent: u64,
    /// The form of the first ordered id.
    pub format: Option<&'static str>,
}

impl IdTracker {
    /// Notes the id of an event: `""` for an event without one. Within a
    /// stream an unchanged id means the event had no `id:` field (the
    /// caller passes the stream's last event id).
    pub fn observe(&mut self, id: &str) {
        if id.is_empty() {
            self.absent += 1;
            return;
        }
        let Some(key) = Key::parse(id) else {
            self.unordered += 1;
            return;
        };
        let first_of_stream = std::mem::take(&mut self.reopened);
        if let Some(last) = &self.last {
            match key.follow(last) {
                None => {
                    self.unordered += 1;
                    return;
                }
                Some((Ordering::Less | Ordering::Equal, _)) if first_of_stream => {
                    self.restarts += 1
                }
                Some((Ordering::Equal, _)) => return,
                Some((Ordering::Less, _)) => self.backwards += 1,
                Some((Ordering::Greater, 0)) => {}
                Some((Ordering::Greater, skipped)) => {
                    self.gaps += 1;
                    self.missing += skipped;
                }
            }
        }
        self.format.get_or_insert(key.format());
        self.last = Some(key);
    }

    /// Adds another sequence's counts (requests: one sequence per stream).
    pub fn add(&mut self, o: &IdTracker) {
        self.missing += o.missing;
        self.gaps += o.gaps;
        self.backwards += o.backwards;
        self.restarts += o.restarts;
        self.unordered += o.unordered;
        self.absent += o.absent;
        self.format = match (self.format, o.format) {
            (Some(a), Some(b)) if a != b => Some(FORMAT_MIXED),
            (a, b) => a.or(b),
        };
    }

    /// A new stream begins: its first id tells a resume from a restart.
    pub fn reopen(&mut self) {
        self.reopened = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(ids: &[&str]) -> IdTracker {
        let mut t = IdTracker::default();
        for id in ids {
            if *id == "|" {
                t.reopen();
            } else {
                t.observe(id);
            }
        }
        t
    }

    fn counts(t: &IdTracker) -> (u64, u64, u64, u64) {
        (t.gaps, t.missing, t.backwards, t.restarts)
    }

    #[test]
    fn contiguous_ids_have_no_gaps() {
        assert_eq!(counts(&track(&["1", "2", "3", "4"])), (0, 0, 0, 0));
    }

    #[test]
    fn counts_gaps_and_missing_ids() {
        assert_eq!(counts(&track(&["1", "2", "5", "6", "8"])), (2, 3, 0, 0));
    }

    #[test]
    fn repeated_id_is_an_event_without_id() {
        assert_eq!(counts(&track(&["3", "3", "3", "4"])), (0, 0, 0, 0));
    }

    #[test]
    fn first_id_may_be_anything_and_others_are_counted() {
        let t = track(&["", "abc", "100", "101", "x", "102"]);
        assert_eq!(counts(&t), (0, 0, 0, 0));
        assert_eq!((t.unordered, t.absent, t.format), (2, 1, Some(FORMAT_INTEGER)));
    }

    #[test]
    fn backwards_ids_within_a_stream_are_out_of_order() {
        assert_eq!(counts(&track(&["5", "6", "2", "3"])), (0, 0, 1, 0));
    }

    #[test]
    fn a_resumed_stream_continues_the_sequence() {
        // Resumed after 3: contiguous, or with a known gap.
        assert_eq!(counts(&track(&["1", "2", "3", "|", "4", "5"])), (0, 0, 0, 0));
        assert_eq!(counts(&track(&["1", "2", "3", "|", "6", "7"])), (1, 2, 0, 0));
    }

    #[test]
    fn a_fresh_connection_is_a_restart_not_disorder() {
        // The new connection's ids begin again; the tracker starts over, so
        // neither its first id nor the ones after count as out of order.
        let t = track(&["1", "2", "3", "4", "|", "1", "2", "3", "5"]);
        assert_eq!(counts(&t), (1, 1, 0, 1));
        // At the very id last seen (one event before the restart): still a
        // restart, not an event without an id.
        assert_eq!(counts(&track(&["1", "|", "1", "2"])), (0, 0, 0, 1));
        // An event without id first: the restart shows at the first id.
        assert_eq!(counts(&track(&["7", "8", "|", "", "2", "3"])), (0, 0, 0, 1));
        // Disorder inside the new stream still counts.
        assert_eq!(counts(&track(&["9", "|", "1", "2", "1"])), (0, 0, 1, 1));
    }

    #[test]
    fn nchan_time_seq_ids() {
        // Tags count within a second and restart at 0 in the next one.
        let t = track(&["1796200695:0", "1796200695:1", "1796200696:0", "1796200696:1"]);
        assert_eq!(counts(&t), (0, 0, 0, 0));
        assert_eq!((t.unordered, t.format), (0, Some(FORMAT_TIME_SEQ)));
        // A skipped tag, within a second and at the start of the next.
        let t = track(&["1796200695:0", "1796200695:3", "1796200697:2"]);
        assert_eq!(counts(&t), (2, 4, 0, 0));
        // Back in time, and a resume that goes on.
        let t = track(&["20:5", "20:4", "19:9", "|", "21:0"]);
        assert_eq!(counts(&t), (0, 0, 2, 0));
    }

    #[test]
    fn prefixed_numbers() {
        let t = track(&["msg-1", "msg-2", "msg-4", "evt_0007"]);
        assert_eq!(counts(&t), (1, 1, 0, 0));
        // Another prefix breaks the sequence: counted, not ordered.
        assert_eq!((t.unordered, t.format), (1, Some(FORMAT_PREFIXED)));
        assert_eq!(counts(&track(&["e0042", "e0041"])), (0, 0, 1, 0));
    }

    #[test]
    fn ids_without_a_sequence() {
        let t = track(&["7f3a", "c0ffee-beef-x", "1796200695:[1,2]", "a:b", "deadbeef"]);
        assert_eq!((t.unordered, t.format), (5, None));
        assert_eq!(counts(&t), (0, 0, 0, 0));
        // A form change mid-stream is not order.
        let t = track(&["1", "2", "3:4", "x5"]);
        assert_eq!((t.unordered, t.format), (2, Some(FORMAT_INTEGER)));
    }
}
