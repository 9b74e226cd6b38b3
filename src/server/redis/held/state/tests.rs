//! Every transition of [`HeldState`] with plain values, and a model-based
//! property: whatever order notices, fills and writes come in, the stream
//! writes each event once and in order, and what the store no longer had is
//! reported lost, never skipped silently.

use proptest::prelude::*;

use super::*;
use crate::protocol::parser::{EventStreamParser, Parsed};

fn data(id: u64) -> Bytes {
    Bytes::from(format!("data: d{id}\n\n"))
}

/// Data bytes of the channel through event `id` (events 1..=id).
fn cum(id: u64) -> u64 {
    (1..=id).map(|i| data(i).len() as u64).sum()
}

fn stored(ids: impl IntoIterator<Item = u64>) -> Vec<StoredEvent> {
    ids.into_iter().map(|id| (id, data(id), cum(id))).collect()
}

fn events(first: u64, last: u64) -> Notice {
    Notice::Events {
        tok: "t".into(),
        first,
        cum: cum(last),
        data: (first..=last).map(data).collect(),
    }
}

fn held() -> HeldState {
    HeldState::new("c".into(), "t".into())
}

/// The event ids of a batch.
fn ids(bytes: &[u8]) -> Vec<u64> {
    let mut p = EventStreamParser::new();
    p.feed(bytes);
    let mut out = Vec::new();
    while let Some(item) = p.next_item().expect("valid stream") {
        if let Parsed::Event(e) = item {
            assert_eq!(e.data, format!("d{}", e.last_event_id), "event intact");
            out.push(e.last_event_id.parse().expect("numeric id"));
        }
    }
    out
}

fn written(h: &mut HeldState) -> Vec<u64> {
    match h.next_batch(1 << 20) {
        (Batch::Data(bytes, n), _) => {
            let v = ids(&bytes);
            assert_eq!(v.len() as u64, n);
            v
        }
        (other, _) => panic!("expected data, got {other:?}"),
    }
}

fn final_notice(last: u64, lost: u64) -> Notice {
    Notice::Final {
        tok: "t".into(),
        last,
        reason: CloseReason::Closed,
        lost,
        home: "H".into(),
        quiet: false,
    }
}

#[test]
fn the_attach_reply_and_live_events_go_out_in_order() {
    let mut h = held();
    let fx = h.start(7, "H".into(), 1, 2, stored(1..=2));
    assert_eq!(fx, Effects { wake: true, ..Effects::default() });
    assert!(h.is_attached());
    let _ = h.notice(events(3, 4));
    assert_eq!(written(&mut h), [1, 2, 3, 4]);
    assert_eq!(h.next_batch(1 << 20).0, Batch::Pending);
}

#[test]
fn notices_before_the_attach_is_answered_wait_for_it() {
    let mut h = held();
    let fx = h.notice(events(3, 3));
    assert_eq!(fx.fill, None, "nothing is asked of the store before the start");
    assert!(!h.is_attached());
    let _ = h.start(7, "H".into(), 2, 2, stored([2]));
    assert_eq!(written(&mut h), [2, 3]);
}

#[test]
fn a_gap_is_filled_from_the_store() {
    let mut h = held();
    // The attach's reply held the first of a longer replay.
    let fx = h.start(7, "H".into(), 1, 5, stored(1..=2));
    assert_eq!(fx.fill, Some(Fill { ser: 7, from: 3, to: 5 }));
    let fx = h.notice(events(6, 6));
    assert_eq!(fx.fill, None, "one fill at a time");
    assert_eq!(written(&mut h), [1, 2]);
    h.filled(stored(3..=5));
    let fx = h.fill_done(&[]);
    assert_eq!(fx.fill, None);
    assert_eq!(written(&mut h), [3, 4, 5, 6]);
}

#[test]
fn events_the_writer_here_lost_the_reply_of_are_read_from_the_store() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 0, Vec::new());
    let _ = h.notice(events(1, 1));
    assert_eq!(written(&mut h), [1]);
    // The batch of sends 2 and 3 was applied, its reply lost, and the
    // batch sent again tells how far the store has events.
    let fx = h.notice(Notice::Stored { tok: "t".into(), last: 3 });
    assert_eq!(fx.fill, Some(Fill { ser: 7, from: 2, to: 3 }));
    h.filled(stored(2..=3));
    let _ = h.fill_done(&[]);
    assert_eq!(written(&mut h), [2, 3]);
    // What the stream has already written asks nothing of the store.
    let fx = h.notice(Notice::Stored { tok: "t".into(), last: 3 });
    assert_eq!(fx.fill, None);
}

#[test]
fn events_a_fill_found_missing_are_skipped_after_being_reported() {
    let mut h = held();
    let fx = h.start(7, "H".into(), 1, 4, Vec::new());
    assert_eq!(fx.fill, Some(Fill { ser: 7, from: 1, to: 4 }));
    // The store had trimmed 1 and 2.
    let (at, lost) = page_gaps(1, 4, [3, 4], false);
    assert_eq!((at, lost.clone()), (5, vec![(1, 2)]));
    h.filled(stored(3..=4));
    let _ = h.fill_done(&lost);
    assert_eq!(written(&mut h), [3, 4]);
}

#[test]
fn pages_of_a_fill_tell_what_is_missing() {
    assert_eq!(page_gaps(1, 10, [1, 2, 3], true), (4, vec![]), "a full page: more may come");
    assert_eq!(page_gaps(1, 10, [2, 5], true), (6, vec![(1, 1), (3, 4)]));
    assert_eq!(page_gaps(4, 10, [4, 5], false), (11, vec![(6, 10)]), "the rest is gone");
    assert_eq!(page_gaps(4, 10, [], false), (11, vec![(4, 10)]));
    assert_eq!(page_gaps(4, 5, [4, 5], false), (6, vec![]));
}

#[test]
fn the_cursor_is_reported_when_it_moves_and_again_after_a_failure() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 2, stored(1..=2));
    assert_eq!(h.cursor(), None, "nothing written yet");
    let (_, fx) = h.next_batch(1 << 20);
    assert!(fx.report);
    let _ = h.notice(events(3, 3));
    let (_, fx) = h.next_batch(1 << 20);
    assert!(!fx.report, "listed once");
    assert_eq!(h.cursor(), Some((7, 3, cum(3))));
    assert_eq!(h.cursor(), None, "reported");
    assert!(h.unreport().report);
    assert_eq!(h.cursor(), Some((7, 3, cum(3))));
}

#[test]
fn the_control_close_follows_every_event_then_the_store_hears_it_flushed() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 1, stored([1]));
    assert_eq!(written(&mut h), [1]);
    let _ = h.notice(events(2, 2));
    let _ = h.notice(final_notice(2, 1));
    assert_eq!(written(&mut h), [2], "every event before the close");
    assert_eq!(h.next_batch(1 << 20).0, Batch::Final);
    assert!(!h.probe(), "ended by its close, not detached");
    let ended = h.dropped().ended.expect("the store hears it");
    assert!(ended.flushed);
    assert_eq!((ended.sent, ended.sent_cum, ended.undelivered), (2, cum(2), 1));
    assert_eq!((ended.home.as_str(), ended.reason), ("H", "c"));
}

#[test]
fn a_closing_stream_that_dies_counts_what_it_did_not_write() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 3, stored(1..=3));
    let _ = h.notice(final_notice(3, 0));
    // One event per batch: two are written.
    let _ = h.next_batch(1);
    let _ = h.next_batch(1);
    let ended = h.dropped().ended.expect("told");
    assert!(!ended.flushed);
    assert_eq!((ended.sent, ended.undelivered), (2, 1));
}

#[test]
fn a_client_that_left_ends_its_stream_at_once_and_the_store_hears_what_it_got() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 3, stored(1..=3));
    let _ = h.next_batch(1);
    let quit = Notice::Final {
        tok: "t".into(),
        last: 3,
        reason: CloseReason::ClosedByClient,
        lost: 0,
        home: "H".into(),
        quiet: true,
    };
    assert!(h.notice(quit).wake);
    assert!(h.probe(), "a writer stuck on the socket stops");
    assert_eq!(h.next_batch(1 << 20).0, Batch::End, "no more events, no control close");
    let ended = h.dropped().ended.expect("the store hears it");
    assert!(!ended.flushed);
    assert_eq!((ended.sent, ended.undelivered, ended.reason), (1, 2, "l"));
}

#[test]
fn a_detached_stream_ends_and_the_store_is_not_told_again() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 0, Vec::new());
    let fx = h.notice(Notice::Detach { tok: "t".into() });
    assert!(fx.wake);
    assert!(h.probe());
    assert_eq!(h.next_batch(1 << 20).0, Batch::End);
    assert_eq!(h.dropped().ended, None, "the channel detached it: nothing to tell");
}

#[test]
fn ending_here_tells_the_store_once() {
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 0, Vec::new());
    let fx = h.end_here();
    assert!(fx.wake);
    let ended = fx.ended.expect("told");
    assert_eq!((ended.sent, ended.flushed, ended.reason), (0, false, ""));
    assert_eq!(h.end_here(), Effects::default());
    assert_eq!(h.dropped().ended, None);
    // A stream dropped while attached tells it too.
    let mut h = held();
    let _ = h.start(7, "H".into(), 1, 0, Vec::new());
    assert!(h.dropped().ended.is_some());
}

// --- the model -------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// The next chunk of live events arrives.
    Notice,
    /// The stream writes what it has.
    Write,
    /// The store answers a page of the fill asked for.
    FillPage,
    /// The attach is answered (once).
    Start,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Notice),
        3 => Just(Step::Write),
        2 => Just(Step::FillPage),
        1 => Just(Step::Start),
    ]
}

/// The fill asked for, where its next page starts, what it found lost.
type Filling = (Fill, u64, Vec<(u64, u64)>);

/// Pages of a fill in the model.
const PAGE: usize = 3;

struct Model {
    h: HeldState,
    /// The store's events: 1..=total, those before `oldest` trimmed.
    oldest: u64,
    /// Live notices still to come: chunks of ids.
    chunks: Vec<(u64, u64)>,
    start: Option<(u64, u64, Vec<StoredEvent>)>,
    fill: Option<Filling>,
    lost: Vec<(u64, u64)>,
    written: Vec<u64>,
}

impl Model {
    fn fx(&mut self, fx: Effects) {
        if let Some(f) = fx.fill {
            assert!(self.fill.is_none(), "one fill at a time");
            self.fill = Some((f, f.from, Vec::new()));
        }
    }

    fn run(&mut self, step: &Step) {
        match step {
            Step::Notice => {
                if !self.chunks.is_empty() {
                    let (first, last) = self.chunks.remove(0);
                    let fx = self.h.notice(events(first, last));
                    self.fx(fx);
                }
            }
            Step::Write => {
                while let (Batch::Data(bytes, _), _) = self.h.next_batch(64) {
                    self.written.extend(ids(&bytes));
                }
            }
            Step::FillPage => {
                if let Some((f, at, mut lost)) = self.fill.take() {
                    let page: Vec<u64> = (at.max(self.oldest)..=f.to).take(PAGE).collect();
                    let full = page.len() == PAGE;
                    let (next, gaps) = page_gaps(at, f.to, page.iter().copied(), full);
                    self.h.filled(stored(page));
                    lost.extend(gaps);
                    if next > f.to {
                        let fx = self.h.fill_done(&lost);
                        self.lost.extend(lost);
                        self.fx(fx);
                    } else {
                        self.fill = Some((f, next, lost));
                    }
                }
            }
            Step::Start => {
                if let Some((start, last, evs)) = self.start.take() {
                    let fx = self.h.start(7, "H".into(), start, last, evs);
                    self.fx(fx);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Attached at `start` with `known` events in the store (the oldest
    /// trimmed up to `trimmed`), the reply carrying `reply` of them, then
    /// live events in chunks: the stream writes every event from its start
    /// once and in order, except those the store had lost, which are
    /// reported.
    #[test]
    fn every_event_is_written_once_in_order_or_reported_lost(
        start in 0u64..30,
        known in 0u64..20,
        trimmed in 0u64..12,
        reply in 0usize..5,
        live in proptest::collection::vec(1u64..4, 0..8),
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        // The store sends from at most one past what it has.
        let start = 1 + start % (known + 1);
        let oldest = trimmed + 1;
        let evs = stored((start.max(oldest)..=known).take(reply));
        let mut chunks = Vec::new();
        let mut next = known + 1;
        for n in live {
            chunks.push((next, next + n - 1));
            next += n;
        }
        let total = next - 1;
        let mut m = Model {
            h: held(),
            oldest,
            chunks,
            start: Some((start, known, evs)),
            fill: None,
            lost: Vec::new(),
            written: Vec::new(),
        };
        for s in &steps {
            m.run(s);
        }
        // Then everything: the attach, the notices, the fills, the writes.
        m.run(&Step::Start);
        while !m.chunks.is_empty() {
            m.run(&Step::Notice);
        }
        // Each fill ends; a stream that keeps asking for the same events
        // would loop here.
        for _ in 0..1000 {
            if m.fill.is_none() {
                break;
            }
            m.run(&Step::FillPage);
        }
        prop_assert!(m.fill.is_none(), "fills end");
        m.run(&Step::Write);
        prop_assert!(m.written.windows(2).all(|w| w[0] < w[1]), "in order, once: {:?}", m.written);
        let lost: Vec<u64> = m.lost.iter().flat_map(|&(a, b)| a..=b).collect();
        prop_assert!(lost.iter().all(|id| *id < oldest), "only trimmed events are lost: {:?}", lost);
        let mut all: Vec<u64> = m.written.iter().chain(&lost).copied().collect();
        all.sort_unstable();
        let want: Vec<u64> = (start..=total).collect();
        prop_assert_eq!(all, want, "written {:?}, lost {:?}", m.written, lost);
    }
}
