//! Every transition of [`Channel`] with plain values, and a model-based
//! property test of delivery across drops, resumes and replay eviction.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::broadcast::{BroadcastLog, EMPTY};
use super::*;
use crate::protocol::event::encode_data;
use crate::protocol::parser::{EventStreamParser, Parsed};

const KEEP: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);

fn settings(keep_alive: Option<Duration>, limits: Limits) -> Settings {
    Settings { limits, keep_alive, first_message_wait: WAIT, max_frame: 256 * 1024 }
}

fn limits() -> Limits {
    Limits { max_clients: 100, max_connections: 100, ..Limits::default() }
}

fn open(keep_alive: Option<Duration>) -> (Channel, u64) {
    open_with(keep_alive, limits())
}

fn open_with(keep_alive: Option<Duration>, limits: Limits) -> (Channel, u64) {
    let mut ch = Channel::new(settings(keep_alive, limits), None);
    let (g, fx) = ch.attach(None, &EMPTY);
    assert_eq!(fx, Effects::default(), "a new channel's first stream needs nothing");
    (ch, g.expect("open"))
}

fn send(ch: &mut Channel, m: &str) -> Effects {
    let (r, fx) = ch.send(encode_data(m));
    r.expect("send");
    fx
}

/// The events of the next batch, as (id, message).
fn batch(ch: &mut Channel, generation: u64) -> Vec<(u64, String)> {
    match ch.next_batch(generation) {
        (Batch::Data(bytes, n), fx) => {
            assert_eq!(fx, Effects::default());
            let events = parse(&bytes);
            assert_eq!(events.len() as u64, n);
            events
        }
        (other, _) => panic!("expected data, got {other:?}"),
    }
}

fn parse(bytes: &[u8]) -> Vec<(u64, String)> {
    let mut p = EventStreamParser::new();
    p.feed(bytes);
    let mut out = Vec::new();
    while let Some(item) = p.next_item().expect("valid stream") {
        if let Parsed::Event(e) = item {
            let id = e.last_event_id.parse().expect("numeric id");
            out.push((id, serde_json::from_str::<String>(&e.data).expect("json")));
        }
    }
    out
}

/// `msgs` as a broadcast batch (numbered from 1).
fn events(msgs: &[Bytes]) -> Arc<Events> {
    BroadcastLog::new(usize::MAX, usize::MAX).append(msgs)
}

fn inbox(ch: &mut Channel) -> Vec<ConnectionEvent> {
    std::iter::from_fn(|| ch.recv().0).collect()
}

fn ids(events: &[(u64, String)]) -> Vec<u64> {
    events.iter().map(|(i, _)| *i).collect()
}

fn closed(reason: CloseReason, undelivered: u64) -> ConnectionEvent {
    ConnectionEvent::Closed(CloseInfo { reason, undelivered })
}

// --- streams and sends ---------------------------------------------------------

#[test]
fn sends_wake_the_attached_stream_and_leave_in_one_batch() {
    let (mut ch, g) = open(None);
    assert!(matches!(ch.next_batch(g), (Batch::Pending, _)));
    assert!(send(&mut ch, "a").wake_stream);
    assert!(send(&mut ch, "b\nc").wake_stream);
    assert_eq!(batch(&mut ch, g), [(1, "a".to_string()), (2, "b\nc".to_string())]);
    assert!(matches!(ch.next_batch(g), (Batch::Pending, _)));
}

#[test]
fn a_broadcast_batch_queues_every_message_in_order_with_one_wake() {
    let (mut ch, g) = open(None);
    let msgs: Vec<_> = ["a", "b", "c"].iter().map(|m| encode_data(m)).collect();
    let (sent, fx) = ch.send_all(&events(&msgs));
    assert_eq!(sent, 3);
    assert_eq!(ch.queue.len(), 1, "one entry for the batch");
    assert_eq!(fx, Effects { wake_stream: true, ..Effects::default() });
    let got: Vec<_> = batch(&mut ch, g).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got, ["a", "b", "c"]);
    assert_eq!(ch.send_all(&events(&msgs)).0, 3, "ids go on: 4, 5, 6");
    assert_eq!(ids(&batch(&mut ch, g)), [4, 5, 6]);
}

#[test]
fn a_broadcast_batch_stops_at_the_slow_consumer_limit() {
    let (mut ch, _) = open_with(None, Limits { outgoing_messages: 2, ..limits() });
    let msgs: Vec<_> = ["a", "b", "c", "d"].iter().map(|m| encode_data(m)).collect();
    let (sent, fx) = ch.send_all(&events(&msgs));
    assert_eq!(sent, 2, "two fit, the third closes the channel");
    assert!(fx.wake_stream && fx.retire);
    assert!(fx.logs.iter().any(|l| matches!(l, Log::SlowConsumer { queued: 2, .. })));
    assert_eq!(ch.send_all(&events(&msgs)).0, 0, "closed: nothing more is queued");
    // The two queued and the one refused are undelivered.
    assert!(inbox(&mut ch).contains(&closed(CloseReason::SlowConsumer, 3)));
    // In bytes too: the third does not fit.
    let one = encode_data("a").len();
    let (mut ch, _) = open_with(None, Limits { outgoing_bytes: 2 * one + 1, ..limits() });
    assert_eq!(ch.send_all(&events(&msgs)).0, 2);
    assert!(!ch.is_live());
}

#[test]
fn a_stream_lagging_behind_broadcasts_is_flagged_until_it_catches_up_or_goes() {
    let l = Limits { outgoing_messages: 8, ..limits() };
    let msgs: Vec<_> = (0..4).map(|i| encode_data(&i.to_string())).collect();
    let (mut ch, g) = open_with(Some(KEEP), l);
    // 4 of 8: not past half.
    assert!(!ch.send_all(&events(&msgs)).1.backlogged);
    // 8 of 8: past half, said once.
    assert!(ch.send_all(&events(&msgs)).1.backlogged);
    assert!(!ch.send_all(&events(&[])).1.backlogged);
    // A frame of 3 leaves 5 (more than a quarter); then all go.
    let mut ch3 = Channel::new(Settings { max_frame: 40, ..ch.settings }, None);
    let g3 = ch3.attach(None, &EMPTY).0.unwrap();
    assert!(ch3.send_all(&events(&[msgs.clone(), msgs.clone()].concat())).1.backlogged);
    let (b, fx) = ch3.next_batch(g3);
    assert!(matches!(b, Batch::Data(_, n) if n < 6) && !fx.caught_up, "{fx:?}");
    while let (Batch::Data(..), fx) = ch3.next_batch(g3) {
        if fx.caught_up {
            assert!(ch3.queue_events * 4 <= 8);
            break;
        }
    }
    assert_eq!(ch3.lag, Lag::None);
    // A stream that goes away holds nothing up; a suspended channel is
    // not flagged.
    assert!(ch.stream_ended(g).caught_up);
    assert!(!ch.send_all(&events(&msgs)).1.backlogged);
    // Nor is a closed one.
    let (mut ch, _) = open_with(Some(KEEP), l);
    assert!(ch.send_all(&events(&[msgs.clone(), msgs.clone()].concat())).1.backlogged);
    assert!(!ch.close(CloseReason::Closed).caught_up, "closing: still flushing");
    let fx = ch.force_close();
    assert!(fx.caught_up);
}

/// A stream that stays behind is waited for during [`LAG_BROADCASTS`]
/// broadcasts, then no more until it is down to a quarter of its queue.
#[test]
fn a_stream_that_stays_behind_holds_up_a_bounded_number_of_broadcasts() {
    let l = Limits { outgoing_messages: 1000, ..limits() };
    let one = events(&[encode_data("x")]);
    let (mut ch, g) = open_with(Some(KEEP), l);
    let behind = |ch: &mut Channel| (1..=600).find(|_| ch.send_all(&one).1.backlogged);
    assert_eq!(behind(&mut ch), Some(501), "flagged past half its queue");
    // The broadcasts after the one that flagged it, until the budget is spent.
    for _ in 1..LAG_BROADCASTS {
        let fx = ch.send_all(&one).1;
        assert!(!fx.caught_up && !fx.backlogged);
    }
    assert!(ch.send_all(&one).1.caught_up, "excused after {LAG_BROADCASTS}");
    for _ in 0..100 {
        let fx = ch.send_all(&one).1;
        assert!(!fx.caught_up && !fx.backlogged, "excused until it catches up");
    }
    // Down to a quarter: it may be waited for again once it lags again.
    while ch.queue_events * 4 > 1000 {
        let (b, fx) = ch.next_batch(g);
        assert!(matches!(b, Batch::Data(..)) && !fx.caught_up, "excused: nothing to count down");
    }
    assert_eq!(ch.lag, Lag::None);
    assert!(behind(&mut ch).is_some(), "flagged again");
}

#[test]
fn batches_are_bounded_by_the_frame_size() {
    let mut ch = Channel::new(Settings { max_frame: 100, ..settings(None, limits()) }, None);
    let g = ch.attach(None, &EMPTY).0.unwrap();
    for _ in 0..10 {
        let _ = send(&mut ch, &"x".repeat(30));
    }
    let mut seen = Vec::new();
    while let (Batch::Data(b, _), _) = ch.next_batch(g) {
        assert!(b.len() <= 100 || parse(&b).len() == 1, "{} bytes", b.len());
        seen.extend(ids(&parse(&b)));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

#[test]
fn sends_while_suspended_wait_for_the_resume() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = ch.stream_ended(g);
    let fx = send(&mut ch, "queued");
    assert!(!fx.wake_stream, "no stream to wake");
    let (g2, _) = ch.attach(None, &EMPTY);
    assert_eq!(batch(&mut ch, g2.unwrap()), [(1, "queued".to_string())]);
}

#[test]
fn a_lost_stream_suspends_under_keep_alive() {
    let (mut ch, g) = open(Some(KEEP));
    let fx = ch.stream_ended(g);
    assert_eq!(fx.keep_alive, Some((1, Timer::Arm(KEEP))));
    assert!(fx.wake_app && !fx.retire);
    assert_eq!(fx.logs, [Log::StreamLost { keep_alive: KEEP }]);
    assert!(ch.is_live() && ch.is_suspended());
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Suspended]);
    // A stale generation changes nothing.
    assert_eq!(ch.stream_ended(g), Effects::default());
}

#[test]
fn a_lost_stream_closes_at_once_without_keep_alive() {
    let (mut ch, g) = open(None);
    let _ = send(&mut ch, "never read");
    let fx = ch.stream_ended(g);
    assert!(fx.retire && fx.wake_app);
    assert_eq!(inbox(&mut ch), [closed(CloseReason::StreamEnded, 1)]);
    assert!(ch.is_closed() && ch.is_done());
    assert_eq!(ch.send(encode_data("late")).0, Err(SendError::Closed));
}

#[test]
fn a_resume_the_application_did_not_see_cancels_the_suspension() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = ch.stream_ended(g);
    let (g2, fx) = ch.attach(None, &EMPTY);
    assert_eq!(fx.keep_alive, Some((1, Timer::Cancel)));
    assert_eq!(fx.logs, [Log::Resumed]);
    assert!(inbox(&mut ch).is_empty(), "suspend + resume unread: nothing happened");
    // Read in between, both are seen.
    let _ = ch.stream_ended(g2.unwrap());
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Suspended]);
    let (_, fx) = ch.attach(None, &EMPTY);
    assert!(fx.wake_app);
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Resumed]);
}

#[test]
fn reconnect_storms_do_not_grow_the_inbox() {
    let (mut ch, mut g) = open(Some(KEEP));
    for _ in 0..10_000 {
        let _ = ch.stream_ended(g);
        g = ch.attach(None, &EMPTY).0.unwrap();
    }
    assert!(inbox(&mut ch).is_empty());
}

#[test]
fn resume_with_last_event_id_replays_what_followed() {
    let (mut ch, g) = open(Some(KEEP));
    for m in ["a", "b", "c"] {
        let _ = send(&mut ch, m);
    }
    assert_eq!(ids(&batch(&mut ch, g)), [1, 2, 3]);
    let _ = send(&mut ch, "d"); // queued, not yet written
    let _ = ch.stream_ended(g);
    let (g2, fx) = ch.attach(Some(1), &EMPTY);
    assert!(fx.logs.iter().all(|l| !matches!(l, Log::Gap { .. })));
    assert_eq!(ids(&batch(&mut ch, g2.unwrap())), [2, 3, 4]);
}

#[test]
fn resume_without_last_event_id_continues_with_the_queue() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "a");
    let _ = batch(&mut ch, g);
    let _ = send(&mut ch, "b");
    let _ = ch.stream_ended(g);
    let g2 = ch.attach(None, &EMPTY).0.unwrap();
    assert_eq!(ids(&batch(&mut ch, g2)), [2]);
}

#[test]
fn last_event_id_ahead_of_what_was_sent_is_ignored() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "a");
    let _ = batch(&mut ch, g);
    let _ = send(&mut ch, "b");
    let _ = ch.stream_ended(g);
    let (g2, fx) = ch.attach(Some(9), &EMPTY);
    assert!(fx.logs.contains(&Log::LastEventIdAhead { last: 9, sent_up_to: 1 }));
    assert_eq!(ids(&batch(&mut ch, g2.unwrap())), [2]);
    // Exactly what was sent: nothing to replay, nothing logged.
    let _ = ch.stream_ended(g2.unwrap());
    let (_, fx) = ch.attach(Some(2), &EMPTY);
    assert!(fx.logs.iter().all(|l| !matches!(l, Log::LastEventIdAhead { .. })), "{fx:?}");
}

#[test]
fn last_event_id_on_a_new_channel_is_ignored() {
    let mut ch = Channel::new(settings(Some(KEEP), limits()), None);
    let (g, fx) = ch.attach(Some(40), &EMPTY);
    assert_eq!(fx, Effects::default());
    let _ = send(&mut ch, "a");
    assert_eq!(ids(&batch(&mut ch, g.unwrap())), [1]);
}

#[test]
fn replay_is_bounded_by_events_and_by_bytes_with_overhead() {
    let l = Limits { replay_events: 3, ..limits() };
    let (mut ch, g) = open_with(Some(KEEP), l);
    for i in 0..5 {
        let _ = send(&mut ch, &i.to_string());
    }
    let _ = batch(&mut ch, g);
    let _ = ch.stream_ended(g);
    let (g2, fx) = ch.attach(Some(0), &EMPTY);
    assert!(fx.logs.contains(&Log::Gap { first: 1, last: 2 }), "{fx:?}");
    assert_eq!(ids(&batch(&mut ch, g2.unwrap())), [3, 4, 5]);

    // Two tiny events weigh their overhead: a budget for two keeps two.
    let per = encode_data("x").len() + REPLAY_OVERHEAD;
    let l = Limits { replay_bytes: 2 * per, ..limits() };
    let (mut ch, g) = open_with(Some(KEEP), l);
    for _ in 0..5 {
        let _ = send(&mut ch, "x");
    }
    let _ = batch(&mut ch, g);
    let _ = ch.stream_ended(g);
    let g2 = ch.attach(Some(0), &EMPTY).0.unwrap();
    assert_eq!(ids(&batch(&mut ch, g2)), [4, 5]);
}

#[test]
fn a_resume_older_than_the_replay_is_a_reported_gap() {
    let l = Limits { replay_events: 2, ..limits() };
    let (mut ch, g) = open_with(Some(KEEP), l);
    for i in 0..6 {
        let _ = send(&mut ch, &i.to_string());
    }
    let _ = batch(&mut ch, g);
    let _ = ch.stream_ended(g);
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Suspended]);
    let (g2, fx) = ch.attach(Some(1), &EMPTY);
    assert!(fx.wake_app);
    assert_eq!(fx.logs, [Log::Resumed, Log::Gap { first: 2, last: 4 }]);
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Resumed, ConnectionEvent::Gap { lost: 3 }]);
    assert_eq!(ids(&batch(&mut ch, g2.unwrap())), [5, 6]);
    // The gap counts in the close.
    let _ = send(&mut ch, "queued");
    let _ = ch.close(CloseReason::Closed);
    let _ = ch.stream_ended(g2.unwrap());
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Closed, 4)]);
}

#[test]
fn a_gap_asked_for_twice_is_reported_once() {
    let l = Limits { replay_events: 1, ..limits() };
    let (mut ch, g) = open_with(Some(KEEP), l);
    for i in 0..4 {
        let _ = send(&mut ch, &i.to_string());
    }
    let _ = batch(&mut ch, g);
    let _ = ch.stream_ended(g);
    let (g2, fx) = ch.attach(Some(0), &EMPTY);
    assert!(fx.logs.contains(&Log::Gap { first: 1, last: 3 }), "{fx:?}");
    // The client saw nothing of the replay either and asks again.
    let (g3, fx) = ch.attach(Some(0), &EMPTY);
    assert!(fx.logs.iter().all(|l| !matches!(l, Log::Gap { .. })), "{fx:?}");
    assert!(!ch.is_attached(g2.unwrap()));
    assert_eq!(ids(&batch(&mut ch, g3.unwrap())), [4]);
    let gaps: Vec<_> =
        inbox(&mut ch).into_iter().filter(|e| matches!(e, ConnectionEvent::Gap { .. })).collect();
    assert_eq!(gaps, [ConnectionEvent::Gap { lost: 3 }]);
}

// --- broadcasts: kept once, in the store's log ----------------------------------

/// Broadcasts `msgs` as the store does: into `log`, then to each channel.
fn broadcast(log: &mut BroadcastLog, chans: &mut [&mut Channel], msgs: &[&str]) {
    let batch: Vec<Bytes> = msgs.iter().map(|m| encode_data(m)).collect();
    let events = log.append(&batch);
    for ch in chans {
        assert_eq!(ch.send_all(&events).0, batch.len());
    }
}

/// What a channel's replay holds, and its counts agree with it.
fn kept(ch: &Channel) -> Vec<Kept> {
    let events: usize = ch.replay.iter().map(Kept::events).sum();
    let weight: usize = ch.replay.iter().map(Kept::weight).sum();
    assert_eq!((ch.replay_events, ch.replay_weight), (events, weight), "{:?}", ch.replay);
    ch.replay.iter().cloned().collect()
}

fn run(first_id: u64, first_seq: u64, count: u64) -> Kept {
    Kept::Broadcast(Run { first_id, first_seq, count })
}

fn ample_log() -> BroadcastLog {
    BroadcastLog::for_limits(&limits())
}

#[test]
fn a_channel_that_only_broadcasts_keeps_one_run_of_the_log() {
    let mut log = ample_log();
    // `a` takes a few events a batch, `b` all.
    let mut a = Channel::new(Settings { max_frame: 100, ..settings(Some(KEEP), limits()) }, None);
    let ga = a.attach(None, &EMPTY).0.unwrap();
    let (mut b, gb) = open(Some(KEEP));
    for round in 0..50 {
        let msgs: Vec<String> = (0..20).map(|i| format!("{round}.{i}")).collect();
        let msgs: Vec<&str> = msgs.iter().map(String::as_str).collect();
        broadcast(&mut log, &mut [&mut a, &mut b], &msgs);
        let _ = batch(&mut a, ga);
        let _ = batch(&mut b, gb);
    }
    // 1,000 events: one entry, weighing one overhead; the bytes are the log's.
    assert_eq!(kept(&b), [run(1, 1, 1000)]);
    assert_eq!(b.replay_weight, REPLAY_OVERHEAD);
    assert_eq!(log.len(), 1000);
    // `a` sent only a batch a round: what it sent is consecutive in ids
    // and in the log, so one run too, and so is what it has queued.
    let sent = a.replay_events as u64;
    assert!(sent < 1000);
    assert_eq!(kept(&a), [run(1, 1, sent)]);
    // Queued: at most one entry per batch, each sharing the log's bytes.
    assert_eq!(a.queue_events as u64, 1000 - sent);
    assert!(a.queue.len() <= 50, "{}", a.queue.len());
    assert_eq!(a.queue.front().map(Queued::first_id), Some(sent + 1));
    for q in &a.queue {
        let Queued::Broadcast { first_id, events, from, .. } = q else { panic!("{q:?}") };
        let (held, i) = log.get(events.first_seq() + *from as u64).expect("in the log");
        assert!(Arc::ptr_eq(held, events) && i == *from && *first_id > sent);
    }
}

#[test]
fn own_and_broadcast_events_resume_in_order_with_their_bytes() {
    let mut log = ample_log();
    let (mut a, ga) = open(Some(KEEP));
    let (mut b, _) = open(Some(KEEP));
    let _ = send(&mut a, "own 1");
    broadcast(&mut log, &mut [&mut a, &mut b], &["all 2", "all 3"]);
    let _ = send(&mut a, "own 4");
    broadcast(&mut log, &mut [&mut a, &mut b], &["all 5"]);
    broadcast(&mut log, &mut [&mut a, &mut b], &["all 6"]);
    let sent: Vec<(u64, String)> = batch(&mut a, ga);
    let want: Vec<(u64, String)> = ["own 1", "all 2", "all 3", "own 4", "all 5", "all 6"]
        .iter()
        .zip(1..)
        .map(|(m, id)| (id, m.to_string()))
        .collect();
    assert_eq!(sent, want);
    // 2..3 and 5..6 are runs of the log (seqs 1..2 and 3..4).
    let own = |id: u64, m: &str| Kept::Own(id, encode_data(m));
    assert_eq!(kept(&a), [own(1, "own 1"), run(2, 1, 2), own(4, "own 4"), run(5, 3, 2)]);
    // Queued meanwhile: after the replay, in order.
    let _ = send(&mut a, "own 7");
    let _ = a.stream_ended(ga);
    let (g2, fx) = a.attach(Some(2), &log);
    assert_eq!(fx.replayed, 4);
    assert!(fx.logs.iter().all(|l| !matches!(l, Log::Gap { .. })), "{fx:?}");
    let mut want = want[2..].to_vec();
    want.push((7, "own 7".into()));
    assert_eq!(batch(&mut a, g2.unwrap()), want);
    // Sent again, the broadcasts are runs again, and the event kept
    // before `Last-Event-ID` is still there.
    assert_eq!(
        kept(&a),
        [own(1, "own 1"), run(2, 1, 2), own(4, "own 4"), run(5, 3, 2), own(7, "own 7")]
    );
}

#[test]
fn a_resume_past_what_the_log_dropped_is_a_gap_reported_once() {
    // The log keeps 3 broadcasts; the channel's own replay would keep all.
    let mut log = BroadcastLog::new(3, 1 << 20);
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "own 1");
    broadcast(&mut log, &mut [&mut ch], &["b2", "b3", "b4"]);
    let _ = send(&mut ch, "own 5");
    broadcast(&mut log, &mut [&mut ch], &["b6", "b7"]);
    assert_eq!(ids(&batch(&mut ch, g)), [1, 2, 3, 4, 5, 6, 7]);
    let _ = ch.stream_ended(g);
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Suspended]);
    // The log dropped b2 and b3: the resume from 0 gets an unbroken run
    // after them, and 1..=3 as one gap (own 1 included: a hole in the
    // middle would be reported as lost only once it were the oldest).
    let (g2, fx) = ch.attach(Some(0), &log);
    assert_eq!(fx.logs, [Log::Resumed, Log::Gap { first: 1, last: 3 }]);
    assert_eq!(fx.replayed, 4);
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Resumed, ConnectionEvent::Gap { lost: 3 }]);
    let got = batch(&mut ch, g2.unwrap());
    assert_eq!(ids(&got), [4, 5, 6, 7]);
    assert_eq!(got[0].1, "b4");
    // Asked for again, it is not reported again.
    let (g3, fx) = ch.attach(Some(0), &log);
    assert!(fx.logs.iter().all(|l| !matches!(l, Log::Gap { .. })), "{fx:?}");
    assert_eq!(ids(&batch(&mut ch, g3.unwrap())), [4, 5, 6, 7]);
    // And the close counts it, once.
    let _ = ch.close(CloseReason::Closed);
    let _ = ch.next_batch(g3.unwrap());
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Closed, 3)]);
}

#[test]
fn replay_bounds_with_broadcasts() {
    // Events: broadcasts count one each, and a run is cut to fit.
    let l = Limits { replay_events: 4, ..limits() };
    let mut log = ample_log();
    let (mut ch, g) = open_with(Some(KEEP), l);
    let _ = send(&mut ch, "own 1");
    broadcast(&mut log, &mut [&mut ch], &["2", "3", "4", "5", "6"]);
    let _ = batch(&mut ch, g);
    assert_eq!(kept(&ch), [run(3, 2, 4)]);
    let _ = ch.stream_ended(g);
    let (g2, fx) = ch.attach(Some(0), &log);
    assert!(fx.logs.contains(&Log::Gap { first: 1, last: 2 }), "{fx:?}");
    assert_eq!(ids(&batch(&mut ch, g2.unwrap())), [3, 4, 5, 6]);

    // Bytes: a channel's own events weigh their bytes, a run one overhead:
    // broadcasts do not push its own events out of the replay.
    let own = encode_data("own").len() + REPLAY_OVERHEAD;
    let l = Limits { replay_bytes: 2 * own + REPLAY_OVERHEAD, ..limits() };
    let (mut ch, g) = open_with(Some(KEEP), l);
    let _ = send(&mut ch, "own");
    broadcast(&mut log, &mut [&mut ch], &["b"; 100]);
    let _ = send(&mut ch, "own");
    let _ = batch(&mut ch, g);
    assert_eq!(ch.replay_weight, 2 * own + REPLAY_OVERHEAD);
    assert_eq!(ch.replay_events, 102);
    // A third own event is one too many: the oldest entry goes first (the
    // first own event), then the run before the others.
    let _ = send(&mut ch, "own");
    let _ = batch(&mut ch, g);
    assert_eq!(ch.replay_events, 102);
    let _ = send(&mut ch, "own");
    let _ = batch(&mut ch, g);
    assert_eq!(kept(&ch).iter().map(Kept::first_id).collect::<Vec<_>>(), [103, 104]);
}

#[test]
fn the_broadcast_log_is_bounded_in_events_and_in_bytes() {
    let x = encode_data("x");
    let w = x.len() + REPLAY_OVERHEAD;
    let mut log = BroadcastLog::new(3, 100 * w);
    assert_eq!(log.append(&[x.clone(), x.clone()]).first_seq(), 1);
    let second = log.append(&[x.clone(), x.clone()]);
    assert_eq!(second.first_seq(), 3);
    assert_eq!((log.len(), log.weight(), log.oldest()), (3, 3 * w, 2));
    assert!(log.get(1).is_none() && log.get(4).is_some() && log.get(5).is_none());
    // The batch encoded once: what the log holds is what channels queue.
    let (held, i) = log.get(4).expect("held");
    assert!(Arc::ptr_eq(held, &second) && i == 1 && held.event(i) == &x[..]);
    assert_eq!(log.get(2).map(|(b, i)| (b.first_seq(), i)), Some((1, 1)), "the oldest in part");
    let mut log = BroadcastLog::new(100, 2 * w);
    assert_eq!(log.append(&[x.clone(), x.clone(), x.clone()]).first_seq(), 1);
    assert_eq!((log.len(), log.weight(), log.oldest()), (2, 2 * w, 2));
    // A batch larger than the log keeps only what fits; an empty one
    // takes no number.
    assert_eq!(log.append(&vec![x.clone(); 5]).first_seq(), 4);
    assert_eq!((log.len(), log.weight(), log.oldest()), (2, 2 * w, 7));
    assert_eq!(log.append(&[]).len(), 0);
    log.clear();
    assert_eq!((log.len(), log.weight()), (0, 0));
    assert_eq!(log.append(std::slice::from_ref(&x)).first_seq(), 9, "the numbers go on");
    // The store's log covers a channel's queue and its replay window.
    let l = limits();
    let log = BroadcastLog::for_limits(&l);
    assert_eq!(log.max_events, l.replay_events + l.outgoing_messages);
    assert_eq!(
        log.max_weight,
        l.replay_bytes + l.outgoing_bytes + l.outgoing_messages * REPLAY_OVERHEAD
    );
}

#[test]
fn a_second_stream_takes_over() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "a");
    let _ = batch(&mut ch, g);
    let (g2, fx) = ch.attach(Some(0), &EMPTY);
    let g2 = g2.unwrap();
    assert!(fx.wake_stream, "the old stream must notice");
    assert_eq!(fx.logs, [Log::TookOver]);
    assert!(!ch.is_attached(g) && ch.is_attached(g2));
    assert!(matches!(ch.next_batch(g), (Batch::End, _)));
    // The old stream's end is stale: nothing is suspended.
    assert_eq!(ch.stream_ended(g), Effects::default());
    assert_eq!(ids(&batch(&mut ch, g2)), [1]);
    assert!(inbox(&mut ch).is_empty());
}

#[test]
fn control_close_flushes_then_ends_with_the_close_event() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "last words");
    let fx = ch.close(CloseReason::Closed);
    assert!(fx.wake_stream && fx.retire, "no POST after a close, a new GET starts afresh");
    assert!(!ch.is_live());
    assert_eq!(ch.send(encode_data("late")).0, Err(SendError::Closed));
    assert_eq!(ids(&batch(&mut ch, g)), [1]);
    let (b, fx) = ch.next_batch(g);
    assert_eq!(b, Batch::Final);
    assert!(!fx.retire, "retired once");
    assert_eq!(fx.logs, [Log::Closed(CloseInfo { reason: CloseReason::Closed, undelivered: 0 })]);
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Closed, 0)]);
    assert!(matches!(ch.next_batch(g), (Batch::End, _)));
    assert_eq!(ch.attach(None, &EMPTY).0, None, "a closing channel takes no stream");
}

#[test]
fn a_close_whose_stream_dies_counts_the_rest_undelivered() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "a");
    let _ = send(&mut ch, "b");
    let _ = ch.close(CloseReason::Shutdown);
    let _ = ch.stream_ended(g);
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Shutdown, 2)]);
}

#[test]
fn closing_a_suspended_channel_is_immediate() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = ch.stream_ended(g);
    let _ = send(&mut ch, "a");
    let fx = ch.close(CloseReason::Closed);
    assert_eq!(fx.keep_alive, Some((1, Timer::Cancel)));
    assert!(fx.retire);
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Suspended, closed(CloseReason::Closed, 1)]);
}

#[test]
fn close_when_delivered_while_suspended_waits_for_the_resume_and_replays() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "progress");
    assert_eq!(ids(&batch(&mut ch, g)), [1]);
    let _ = ch.stream_ended(g); // cut: the event may be lost in the socket
    let _ = send(&mut ch, "answer");
    let fx = ch.close_when_delivered(CloseReason::Closed);
    assert_eq!(fx, Effects::default(), "nothing happens until the client comes back");
    assert!(ch.is_live());
    let (g2, fx) = ch.attach(Some(0), &EMPTY);
    let g2 = g2.expect("a resume is still taken");
    assert!(fx.retire && fx.logs.contains(&Log::Closing(CloseReason::Closed)));
    assert_eq!(batch(&mut ch, g2), [(1, "progress".into()), (2, "answer".into())]);
    assert_eq!(ch.next_batch(g2).0, Batch::Final);
    // The unread suspension was cancelled by the resume.
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Closed, 0)]);
}

#[test]
fn close_when_delivered_with_a_stream_is_a_close_and_keep_alive_still_bounds_it() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "answer");
    let fx = ch.close_when_delivered(CloseReason::Closed);
    assert!(fx.wake_stream && fx.retire);
    assert_eq!(ids(&batch(&mut ch, g)), [1]);
    assert_eq!(ch.next_batch(g).0, Batch::Final);
    // Suspended and never resumed: the keep-alive ends it, the answer
    // counted undelivered.
    let (mut ch, g) = open(Some(KEEP));
    let _ = ch.stream_ended(g);
    let _ = send(&mut ch, "answer");
    let _ = ch.close_when_delivered(CloseReason::Closed);
    let _ = ch.deadline(Deadline::KeepAlive { epoch: 1 });
    assert_eq!(
        inbox(&mut ch),
        [ConnectionEvent::Suspended, closed(CloseReason::KeepAliveExpired, 1)]
    );
}

#[test]
fn a_channel_may_number_its_events_from_elsewhere() {
    let first = (7u64 << 32) + 1;
    let mut ch = Channel::new(settings(Some(KEEP), limits()), None).starting_at(first);
    let (g, _) = ch.attach(None, &EMPTY);
    let g = g.expect("open");
    let _ = send(&mut ch, "a");
    let _ = send(&mut ch, "b");
    assert_eq!(ids(&batch(&mut ch, g)), [first, first + 1]);
    let _ = ch.stream_ended(g);
    let (g, fx) = ch.attach(Some(first), &EMPTY);
    assert!(!fx.logs.iter().any(|l| matches!(l, Log::Gap { .. })), "{:?}", fx.logs);
    assert_eq!(ids(&batch(&mut ch, g.expect("resumed"))), [first + 1]);
}

#[test]
fn drop_stream_ends_without_close_and_suspends() {
    let (mut ch, g) = open(Some(KEEP));
    let fx = ch.drop_stream();
    assert!(fx.wake_stream);
    assert_eq!(fx.logs[0], Log::Dropped);
    assert!(ch.is_suspended());
    assert!(matches!(ch.next_batch(g), (Batch::End, _)));
    assert_eq!(ch.drop_stream(), Effects::default(), "no stream, nothing to drop");
    let (mut ch, _) = open(None);
    let _ = ch.drop_stream();
    assert_eq!(inbox(&mut ch), [closed(CloseReason::StreamEnded, 0)]);
}

#[test]
fn a_full_queue_disconnects_a_slow_consumer() {
    let l = Limits { outgoing_messages: 2, ..limits() };
    let (mut ch, g) = open_with(Some(KEEP), l);
    let _ = send(&mut ch, "a");
    let _ = send(&mut ch, "b");
    let (r, fx) = ch.send(encode_data("c"));
    assert_eq!(r, Err(SendError::SlowConsumer));
    assert!(fx.wake_stream && fx.retire);
    assert!(matches!(fx.logs[0], Log::SlowConsumer { queued: 2, .. }));
    assert!(matches!(ch.next_batch(g), (Batch::End, _)));
    assert_eq!(inbox(&mut ch), [closed(CloseReason::SlowConsumer, 3)]);
    // By bytes too.
    let l = Limits { outgoing_bytes: 20, ..limits() };
    let (mut ch, _) = open_with(Some(KEEP), l);
    assert_eq!(ch.send(encode_data(&"x".repeat(30))).0, Err(SendError::SlowConsumer));
}

#[test]
fn keep_alive_expiry_matches_its_epoch() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = ch.stream_ended(g);
    let g2 = ch.attach(None, &EMPTY).0.unwrap();
    let _ = ch.stream_ended(g2);
    let _ = send(&mut ch, "a");
    let _ = inbox(&mut ch);
    assert_eq!(ch.deadline(Deadline::KeepAlive { epoch: 1 }), Effects::default(), "stale");
    let fx = ch.deadline(Deadline::KeepAlive { epoch: 2 });
    assert!(fx.retire);
    assert_eq!(inbox(&mut ch), [closed(CloseReason::KeepAliveExpired, 1)]);
}

#[test]
fn shutdown_grace_over_closes_what_is_left() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "a");
    let _ = ch.close(CloseReason::Shutdown);
    let fx = ch.force_close();
    assert!(fx.wake_stream);
    assert!(matches!(ch.next_batch(g), (Batch::End, _)));
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Shutdown, 1)]);
    assert_eq!(ch.force_close(), Effects::default());
    let (mut ch, g) = open(Some(KEEP));
    let _ = ch.stream_ended(g);
    let _ = ch.force_close();
    assert_eq!(inbox(&mut ch), [ConnectionEvent::Suspended, closed(CloseReason::Shutdown, 0)]);
}

#[test]
fn a_client_close_skips_keep_alive() {
    let (mut ch, g) = open(Some(KEEP));
    let _ = send(&mut ch, "unsent");
    let fx = ch.client_closed();
    assert!(fx.wake_stream && fx.retire);
    assert!(matches!(ch.next_batch(g), (Batch::End, _)));
    assert_eq!(inbox(&mut ch), [closed(CloseReason::ClosedByClient, 1)]);
    assert_eq!(ch.client_closed(), Effects::default());
}

// --- POSTs ------------------------------------------------------------------------

fn post(ch: &mut Channel, id: u64, m: &str) -> (Result<Offer, InboundError>, Effects) {
    assert_eq!(ch.reserve(m.len()), Ok(true), "room for {id}");
    ch.offer(id, m.to_string(), m.len())
}

fn messages(ch: &mut Channel) -> Vec<String> {
    inbox(ch)
        .into_iter()
        .filter_map(|e| match e {
            ConnectionEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn posts_reach_the_inbox_in_order_once() {
    let (mut ch, _) = open(None);
    assert_eq!(post(&mut ch, 2, "c").0, Ok(Offer::Buffered));
    assert_eq!(post(&mut ch, 1, "b").0, Ok(Offer::Buffered));
    assert_eq!(post(&mut ch, 2, "c").0, Ok(Offer::Duplicate));
    assert!(messages(&mut ch).is_empty());
    let (r, fx) = post(&mut ch, 0, "a");
    assert_eq!(r, Ok(Offer::Ready));
    assert!(fx.wake_app);
    assert_eq!(messages(&mut ch), ["a", "b", "c"]);
    assert_eq!(post(&mut ch, 0, "a").0, Ok(Offer::Duplicate));
    assert_eq!(ch.held_bytes(), 0);
}

#[test]
fn the_window_and_the_reorder_bytes_are_enforced() {
    let l = Limits { reorder_window: 4, ..limits() };
    let (mut ch, _) = open_with(None, l);
    assert_eq!(post(&mut ch, 5, "x").0, Err(InboundError::TooFarAhead { next: 0, window: 4 }));
    let reorder_bytes = 70 + crate::protocol::reorder::CHUNK_OVERHEAD;
    let l = Limits { reorder_bytes, ..limits() };
    let (mut ch, _) = open_with(None, l);
    assert_eq!(post(&mut ch, 1, "x").0, Ok(Offer::Buffered));
    assert!(matches!(post(&mut ch, 2, "y").0, Err(InboundError::ReorderFull { .. })));
}

#[test]
fn posts_wait_for_room_and_reading_frees_it() {
    let l = Limits { incoming_messages: 2, incoming_bytes: 1000, ..limits() };
    let (mut ch, _) = open_with(None, l);
    let _ = post(&mut ch, 0, "a");
    let _ = post(&mut ch, 1, "b");
    assert_eq!(ch.reserve(1), Ok(false), "two messages wait for the application");
    let (ev, fx) = ch.recv();
    assert_eq!(ev, Some(ConnectionEvent::Message("a".into())));
    assert!(fx.room);
    assert_eq!(ch.reserve(1), Ok(true));
    // Bytes bound the inbox too, reserved bodies included.
    let l = Limits { incoming_messages: 100, incoming_bytes: 10, ..limits() };
    let (mut ch, _) = open_with(None, l);
    assert_eq!(ch.reserve(8), Ok(true));
    assert_eq!(ch.reserve(8), Ok(false));
    let fx = ch.unreserve(8);
    assert!(fx.room);
    assert_eq!(ch.reserve(8), Ok(true));
    // One always gets in when nothing is held, even past the byte bound.
    let (mut ch, _) = open_with(None, l);
    assert_eq!(ch.reserve(50), Ok(true));
}

#[test]
fn a_new_id_waits_for_its_first_messages_then_skips_the_gap() {
    let (mut ch, _) = open(None);
    let (r, fx) = post(&mut ch, 3, "d");
    assert_eq!(r, Ok(Offer::Buffered));
    assert_eq!(fx.first_message, Some(Timer::Arm(WAIT)));
    let (_, fx) = post(&mut ch, 4, "e");
    assert_eq!(fx.first_message, None, "armed once");
    let fx = ch.deadline(Deadline::FirstMessage);
    assert_eq!(fx.logs, [Log::SkippedToFirst { start: 3, wait: WAIT }]);
    assert_eq!(messages(&mut ch), ["d", "e"]);
    assert_eq!(ch.next_message_id(), 5);
    assert_eq!(ch.deadline(Deadline::FirstMessage), Effects::default(), "fires once");
}

#[test]
fn message_zero_in_time_cancels_the_wait() {
    let (mut ch, _) = open(None);
    let _ = post(&mut ch, 1, "b");
    let (_, fx) = post(&mut ch, 0, "a");
    assert_eq!(fx.first_message, Some(Timer::Cancel));
    assert_eq!(messages(&mut ch), ["a", "b"]);
    assert_eq!(ch.deadline(Deadline::FirstMessage), Effects::default());
}

#[test]
fn a_remembered_id_keeps_counting_without_a_first_wait() {
    let (mut old, _) = open(None);
    let _ = post(&mut old, 0, "a");
    let _ = post(&mut old, 2, "c");
    let remembered = old.take_inbound();
    let mut ch = Channel::new(settings(None, limits()), Some(remembered));
    let _ = ch.attach(None, &EMPTY);
    let (r, fx) = post(&mut ch, 3, "d");
    assert_eq!(r, Ok(Offer::Buffered));
    assert_eq!(fx.first_message, None);
    assert_eq!(post(&mut ch, 0, "a").0, Ok(Offer::Duplicate));
    let _ = post(&mut ch, 1, "b");
    assert_eq!(messages(&mut ch), ["b", "c", "d"]);
}

#[test]
fn posts_after_the_application_left_are_refused() {
    let (mut ch, _) = open(None);
    let _ = post(&mut ch, 0, "unread");
    let fx = ch.app_dropped();
    assert!(fx.room, "waiting POSTs must learn it");
    assert_eq!(fx.logs, [Log::UnreadMessages { count: 1 }]);
    assert_eq!(ch.reserve(1), Err(InboundError::AppGone));
    assert_eq!(ch.held_bytes(), 0);
}

#[test]
fn nothing_follows_the_close_event() {
    let (mut ch, g) = open(None);
    assert_eq!(ch.reserve(1), Ok(true));
    let fx = ch.close(CloseReason::Closed);
    assert!(fx.retire);
    // A POST that reserved before the close is refused after it.
    assert_eq!(ch.offer(0, "late".into(), 1).0, Err(InboundError::Closed));
    assert_eq!(ch.reserve(1), Err(InboundError::Closed));
    let _ = ch.next_batch(g);
    assert_eq!(inbox(&mut ch), [closed(CloseReason::Closed, 0)]);
    assert_eq!(ch.recv().0, None);
    assert!(ch.is_done());
}

// --- the model --------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Send,
    /// The stream writes its next batch and the client reads all of it.
    Poll,
    /// The stream writes its next batch; the connection dies after the
    /// client read only `k` of its events.
    Cut(u8),
    /// A broadcast of this many events (logged, then queued).
    Broadcast(u8),
    /// Two broadcasts whose batches reach the channel in the other order
    /// than they were logged in (two callers racing).
    RacingBroadcasts,
    /// The client reconnects with the last id it saw.
    Resume,
    /// A second stream while the first still looks open.
    TakeOver,
    Drop,
    Expire,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Send),
        3 => (1u8..4).prop_map(Op::Broadcast),
        1 => Just(Op::RacingBroadcasts),
        3 => Just(Op::Poll),
        2 => any::<u8>().prop_map(Op::Cut),
        3 => Just(Op::Resume),
        1 => Just(Op::TakeOver),
        1 => Just(Op::Drop),
        1 => Just(Op::Expire),
        1 => Just(Op::Close),
    ]
}

/// The client and what it was told.
struct Model {
    ch: Channel,
    /// The store's broadcast log.
    log: BroadcastLog,
    stream: Option<u64>,
    received: Vec<u64>,
    sent: u64,
    gap_lost: u64,
    epoch: Option<u64>,
    close: Option<CloseInfo>,
}

impl Model {
    fn take_inbox(&mut self) {
        for ev in inbox(&mut self.ch) {
            match ev {
                ConnectionEvent::Gap { lost } => self.gap_lost += lost,
                ConnectionEvent::Closed(info) => self.close = Some(info),
                _ => {}
            }
        }
    }

    fn fx(&mut self, fx: Effects) {
        if let Some((epoch, t)) = fx.keep_alive {
            self.epoch = matches!(t, Timer::Arm(_)).then_some(epoch);
        }
    }

    fn receive(&mut self, events: &[(u64, String)]) {
        for (id, data) in events {
            assert!(
                self.received.last().is_none_or(|last| id > last),
                "{id} after {:?}",
                self.received.last()
            );
            assert_eq!(data, &format!("m{id}"), "event {id} intact");
            self.received.push(*id);
        }
    }

    fn next(&mut self, keep: Option<usize>) {
        let Some(g) = self.stream else { return };
        let (b, fx) = self.ch.next_batch(g);
        self.fx(fx);
        match b {
            Batch::Data(bytes, _) => {
                let events = parse(&bytes);
                let k = keep.map_or(events.len(), |k| k.min(events.len()));
                self.receive(&events[..k]);
                if keep.is_some() {
                    let fx = self.ch.stream_ended(g);
                    self.fx(fx);
                    self.stream = None;
                }
            }
            Batch::Final | Batch::End => self.stream = None,
            Batch::Pending => {}
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Send => {
                let id = self.ch.next_event_id;
                let (r, fx) = self.ch.send(encode_data(&format!("m{id}")));
                self.fx(fx);
                // The event that finds the queue full counts undelivered.
                if matches!(r, Ok(()) | Err(SendError::SlowConsumer)) {
                    self.sent += 1;
                }
            }
            Op::Broadcast(n) => {
                let batch = self.numbered(self.ch.next_event_id, *n);
                let events = self.log.append(&batch);
                self.broadcast(&events);
            }
            Op::RacingBroadcasts => {
                let next = self.ch.next_event_id;
                let (first, second) = (self.numbered(next + 2, 1), self.numbered(next, 2));
                let (first, second) = (self.log.append(&first), self.log.append(&second));
                self.broadcast(&second);
                self.broadcast(&first);
            }
            Op::Poll => self.next(None),
            Op::Cut(k) => self.next(Some(*k as usize % 4)),
            Op::Resume if self.stream.is_none() => self.attach(),
            Op::TakeOver if self.stream.is_some() => self.attach(),
            Op::Resume | Op::TakeOver => {}
            Op::Drop => {
                let fx = self.ch.drop_stream();
                self.fx(fx);
                // A closing channel's stream goes on to the close event.
                self.stream = self.stream.filter(|g| self.ch.is_attached(*g));
            }
            Op::Expire => {
                if let Some(epoch) = self.epoch {
                    let fx = self.ch.deadline(Deadline::KeepAlive { epoch });
                    self.fx(fx);
                }
            }
            Op::Close => {
                let fx = self.ch.close(CloseReason::Closed);
                self.fx(fx);
            }
        }
        self.take_inbox();
        // The bounds hold after every step; the counts are right.
        let l = self.ch.settings.limits;
        let _ = kept(&self.ch);
        assert!(self.ch.replay_events <= l.replay_events, "{:?}", self.ch.replay);
        assert!(self.ch.replay_weight <= l.replay_bytes, "{:?}", self.ch.replay);
        let queued: usize = self.ch.queue.iter().map(Queued::events).sum();
        assert_eq!(queued, self.ch.queue_events, "{:?}", self.ch.queue);
        assert!(
            self.ch.queue_events <= l.outgoing_messages + l.replay_events,
            "{:?}",
            self.ch.queue
        );
        assert!(self.log.len() <= self.log.max_events && self.log.weight() <= self.log.max_weight);
    }

    /// `n` events whose text is the id each will get from `first` on.
    fn numbered(&self, first: u64, n: u8) -> Vec<Bytes> {
        (first..first + u64::from(n)).map(|id| encode_data(&format!("m{id}"))).collect()
    }

    fn broadcast(&mut self, events: &Arc<Events>) {
        let (n, fx) = self.ch.send_all(events);
        let refused = fx.logs.iter().any(|l| matches!(l, Log::SlowConsumer { .. }));
        self.fx(fx);
        self.sent += n as u64 + u64::from(refused);
    }

    /// Reconnects with the last id seen, or 0 before any (as ssechan's
    /// clients do: without the header a resume cannot replay, which is
    /// what a package:sse client gets).
    fn attach(&mut self) {
        let last = self.received.last().copied().unwrap_or(0);
        let (g, fx) = self.ch.attach(Some(last), &self.log);
        self.fx(fx);
        if g.is_some() {
            self.stream = g;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens, the client sees events in order, each once and
    /// intact; and while the channel lives, every event sent, its own or
    /// broadcast, either reaches it or is reported lost in a gap — nothing
    /// vanishes, whether the channel's replay or the broadcast log (each
    /// bounded in events and in bytes, from tiny to ample) dropped it.
    #[test]
    fn delivery_is_exact_or_reported(
        ops in proptest::collection::vec(op(), 1..120),
        replay in 1usize..6,
        replay_bytes in prop_oneof![Just(256 << 10), 60usize..400],
        log_bounds in (1usize..12, 60usize..1000),
    ) {
        let l = Limits { replay_events: replay, replay_bytes, outgoing_messages: 40, ..limits() };
        let mut ch = Channel::new(Settings { max_frame: 64, ..settings(Some(KEEP), l) }, None);
        let stream = ch.attach(None, &EMPTY).0;
        let log = BroadcastLog::new(log_bounds.0, log_bounds.1);
        let mut m = Model { ch, log, stream, received: vec![], sent: 0, gap_lost: 0, epoch: None, close: None };
        for op in &ops {
            m.apply(op);
        }
        if m.ch.is_live() {
            if m.stream.is_none() {
                m.attach();
            }
            while m.stream.is_some() && !m.ch.queue.is_empty() {
                m.next(None);
            }
            m.take_inbox();
            prop_assert_eq!(m.received.len() as u64 + m.gap_lost, m.sent, "received {:?}", m.received);
        } else {
            // Closing: the stream flushes up to the close event.
            while m.stream.is_some() {
                m.next(None);
            }
            m.take_inbox();
            let info = m.close.expect("closed");
            // What never left the server is counted, gaps included.
            prop_assert!(m.received.len() as u64 + info.undelivered <= m.sent);
            prop_assert!(info.undelivered >= m.gap_lost);
        }
    }

    /// Shuffled, duplicated POSTs reach the application once, in order.
    #[test]
    fn posts_arrive_in_order_once(order in Just((0u64..60).collect::<Vec<_>>()).prop_shuffle(), dups in proptest::collection::vec(0u64..60, 0..30)) {
        let (mut ch, _) = open(None);
        let mut out = Vec::new();
        for id in order.iter().chain(dups.iter()) {
            let m = id.to_string();
            let len = m.len();
            prop_assert_eq!(ch.reserve(len), Ok(true));
            let (r, _) = ch.offer(*id, m, len);
            prop_assert!(r.is_ok());
            out.extend(messages(&mut ch));
        }
        let want: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        prop_assert_eq!(out, want);
        prop_assert_eq!(ch.held_bytes(), 0);
    }
}

#[test]
fn bytes_are_shared_not_copied_into_replay() {
    let (mut ch, g) = open(Some(KEEP));
    let data = Bytes::from_static(b"data: \"x\"\n\n");
    let _ = ch.send(data.clone());
    let _ = batch(&mut ch, g);
    let Some(Kept::Own(1, kept)) = ch.replay.back() else { panic!("{:?}", ch.replay) };
    assert_eq!(kept.as_ptr(), data.as_ptr());
}
