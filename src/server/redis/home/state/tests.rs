//! Every transition of [`HomeState`] with plain values, and properties of
//! its accounting: messages reach the inbox once and in order whatever
//! notices overlap, the held bytes the I/O layer counts never fall below
//! what the inbox holds, and operations leave numbered in order with the
//! home listed once.

use proptest::prelude::*;

use super::*;

const KEEP: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);
const WATCHDOG: Duration = Duration::from_secs(50);

fn settings() -> HomeSettings {
    HomeSettings {
        keep_alive: Some(KEEP),
        first_message_wait: WAIT,
        close_watchdog: WATCHDOG,
        outgoing_messages: 3,
        outgoing_bytes: 100,
    }
}

fn home() -> HomeState {
    HomeState::new(settings(), 0)
}

fn messages(first: u64, ms: &[&str]) -> Notice {
    Notice::Messages {
        cid: "c".into(),
        ser: 1,
        first,
        messages: ms.iter().map(|m| m.to_string()).collect(),
    }
}

fn suspended(epoch: u64) -> Notice {
    Notice::Suspended { cid: "c".into(), ser: 1, epoch }
}

fn resumed() -> Notice {
    Notice::Resumed { cid: "c".into(), ser: 1 }
}

fn closed(reason: CloseReason, undelivered: u64) -> Notice {
    Notice::Closed { cid: "c".into(), ser: 1, reason, undelivered }
}

fn inbox(h: &mut HomeState) -> Vec<ConnectionEvent> {
    std::iter::from_fn(|| h.recv().0).collect()
}

fn ops(h: &mut HomeState) -> Vec<Op> {
    let mut v = Vec::new();
    while h.take_ops(&mut v, usize::MAX, usize::MAX) {}
    v
}

fn msg(m: &str) -> ConnectionEvent {
    ConnectionEvent::Message(m.into())
}

// --- the store's notices -----------------------------------------------------

#[test]
fn messages_reach_the_inbox_once_and_in_order() {
    let mut h = home();
    let fx = h.notice(messages(0, &["a", "b"]));
    assert!(fx.wake_app);
    assert_eq!((fx.delivered, fx.released), (2, 0));
    // A notice sent again (a batch retried) overlaps: only the new one.
    let fx = h.notice(messages(1, &["b", "c"]));
    assert_eq!((fx.delivered, fx.released), (1, 1));
    assert_eq!(inbox(&mut h), [msg("a"), msg("b"), msg("c")]);
}

#[test]
fn a_skipped_start_is_logged() {
    let mut h = HomeState::new(settings(), 0);
    let fx = h.notice(messages(3, &["d"]));
    assert_eq!(fx.logs, [Log::Skipped { start: 3 }]);
    assert_eq!(inbox(&mut h), [msg("d")]);
}

#[test]
fn messages_for_an_application_that_left_are_released_and_logged() {
    let mut h = home();
    let _ = h.notice(messages(0, &["a"]));
    let fx = h.app_dropped();
    assert_eq!(fx.released, 1, "the unread message is no longer held");
    assert_eq!(fx.logs, [Log::UnreadMessages { count: 1 }]);
    let fx = h.notice(messages(1, &["bb", "c"]));
    assert_eq!((fx.delivered, fx.released), (0, 3));
    assert_eq!(fx.logs, [Log::Dropped { count: 2 }]);
}

#[test]
fn taking_a_message_releases_it_and_lists_the_home_once() {
    let mut h = home();
    let _ = h.notice(messages(0, &["ab", "c"]));
    let (ev, fx) = h.recv();
    assert_eq!(ev, Some(msg("ab")));
    assert_eq!((fx.released, fx.report), (2, true));
    let (_, fx) = h.recv();
    assert_eq!((fx.released, fx.report), (1, false), "listed already");
    assert_eq!(h.take_taken(), (2, 3));
    // A failed report counts them again, and lists the home again.
    let fx = h.untake(2, 3);
    assert!(fx.report);
    assert_eq!(h.take_taken(), (2, 3));
    assert_eq!(h.take_taken(), (0, 0));
}

#[test]
fn suspension_and_resume_follow_the_store() {
    let mut h = home();
    let fx = h.notice(suspended(4));
    assert_eq!(fx.timers, [(Due::KeepAlive(4), Timer::Arm(KEEP))]);
    assert_eq!(fx.logs, [Log::Suspended { keep_alive: KEEP }]);
    assert!(h.phase().is_suspended());
    // The keep-alive of another epoch does nothing; its own expires it.
    assert!(ops(&mut h).is_empty());
    let _ = h.deadline(Due::KeepAlive(3));
    assert!(ops(&mut h).is_empty());
    let fx = h.notice(resumed());
    assert_eq!(fx.timers, [(Due::KeepAlive(4), Timer::Cancel)]);
    assert!(!h.phase().is_suspended());
    let _ = h.deadline(Due::KeepAlive(4));
    assert!(ops(&mut h).is_empty(), "resumed: nothing expires");
    let _ = h.notice(suspended(5));
    let fx = h.deadline(Due::KeepAlive(5));
    assert!(fx.write);
    assert_eq!(ops(&mut h), [Op { seq: 1, kind: OpKind::Expire(5) }]);
    // A resume the application did not see cancels the suspension.
    assert_eq!(inbox(&mut h), [ConnectionEvent::Suspended]);
}

#[test]
fn gaps_reach_the_application_and_the_counters() {
    let mut h = home();
    let fx = h.notice(Notice::Gap { cid: "c".into(), ser: 1, lost: 3, first: 5 });
    assert_eq!(fx.gap_events, 3);
    assert_eq!(fx.logs, [Log::Gap { first: 5, lost: 3 }]);
    let _ = h.notice(Notice::Gap { cid: "c".into(), ser: 1, lost: 2, first: 8 });
    assert_eq!(inbox(&mut h), [ConnectionEvent::Gap { lost: 5 }], "unread gaps merge");
}

#[test]
fn the_first_message_wait_is_armed_by_the_store_and_asks_it_to_skip() {
    let mut h = home();
    let fx = h.notice(Notice::FirstWait { cid: "c".into(), ser: 1 });
    assert_eq!(fx.timers, [(Due::FirstMessage, Timer::Arm(WAIT))]);
    let _ = h.deadline(Due::FirstMessage);
    assert_eq!(ops(&mut h), [Op { seq: 1, kind: OpKind::First }]);
}

#[test]
fn the_close_is_the_last_event_and_cancels_every_deadline() {
    let mut h = home();
    let _ = h.notice(suspended(2));
    let fx = h.notice(closed(CloseReason::KeepAliveExpired, 4));
    let info = CloseInfo { reason: CloseReason::KeepAliveExpired, undelivered: 4 };
    assert_eq!(fx.closed, Some(info));
    assert_eq!(
        fx.timers,
        [
            (Due::KeepAlive(2), Timer::Cancel),
            (Due::FirstMessage, Timer::Cancel),
            (Due::Watchdog, Timer::Cancel)
        ]
    );
    assert_eq!(fx.logs, [Log::Closed(info)]);
    // Closed once: a second notice, a late watchdog, do nothing.
    assert_eq!(h.notice(closed(CloseReason::Shutdown, 0)), Effects::default());
    assert_eq!(h.deadline(Due::Watchdog), Effects::default());
    assert_eq!(inbox(&mut h), [ConnectionEvent::Suspended, ConnectionEvent::Closed(info)]);
    assert!(h.is_done());
    assert_eq!(h.send(Bytes::from_static(b"x")).0, Err(SendError::Closed));
}

// --- the application's side -----------------------------------------------------

#[test]
fn operations_leave_numbered_in_order_and_the_home_is_listed_once() {
    let mut h = home();
    let (r, fx) = h.send(Bytes::from_static(b"a"));
    assert_eq!((r, fx.write, fx.sent), (Ok(()), true, 1));
    let (_, fx) = h.send(Bytes::from_static(b"b"));
    assert!(!fx.write, "listed already");
    let fx = h.drop_stream();
    assert_eq!(fx.logs, [Log::StreamDropped]);
    let mut taken = Vec::new();
    assert!(h.take_ops(&mut taken, 2, usize::MAX), "one left");
    assert!(!h.take_ops(&mut taken, 2, usize::MAX));
    let seqs: Vec<u64> = taken.iter().map(|o| o.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(taken[2].kind, OpKind::Drop);
    // Taken: the next operation lists the home again.
    assert!(h.close().write);
}

#[test]
fn a_batch_takes_sends_up_to_its_bytes_at_least_one() {
    let mut h = home();
    for d in [&b"aaaa"[..], b"bbbb", b"cc"] {
        let _ = h.send(Bytes::copy_from_slice(d));
    }
    let mut taken = Vec::new();
    assert!(h.take_ops(&mut taken, 10, 1));
    assert_eq!(taken.len(), 1, "one over the bytes still goes");
    assert!(!h.take_ops(&mut taken, 10, 8));
    assert_eq!(taken.len(), 3);
}

#[test]
fn sends_the_store_does_not_take_make_a_slow_consumer() {
    let mut h = home();
    for _ in 0..3 {
        assert_eq!(h.send(Bytes::from_static(b"x")).0, Ok(()));
    }
    let (r, fx) = h.send(Bytes::from_static(b"x"));
    assert_eq!(r, Err(SendError::SlowConsumer));
    assert_eq!(fx.logs, [Log::SlowConsumer]);
    assert_eq!(fx.timers, [(Due::Watchdog, Timer::Arm(WATCHDOG))]);
    assert_eq!(ops(&mut h).last().map(|o| &o.kind), Some(&OpKind::SlowConsumer));
    assert_eq!(h.send(Bytes::from_static(b"x")).0, Err(SendError::Closed));
    // The store never confirms: the watchdog closes it here.
    let fx = h.deadline(Due::Watchdog);
    assert_eq!(fx.logs[0], Log::Unconfirmed);
    assert_eq!(fx.closed, Some(CloseInfo { reason: CloseReason::SlowConsumer, undelivered: 0 }));
}

#[test]
fn flushed_sends_make_room_again() {
    let mut h = home();
    for _ in 0..3 {
        let _ = h.send(Bytes::from_static(b"xx"));
    }
    h.flushed(2);
    assert_eq!(h.send(Bytes::from_static(b"y")).0, Ok(()));
    // The bytes bound too.
    let mut h = home();
    let _ = h.send(Bytes::from(vec![b'x'; 60]));
    assert_eq!(h.send(Bytes::from(vec![b'x'; 41])).0, Err(SendError::SlowConsumer));
}

#[test]
fn closing_asks_the_store_and_watches_for_its_answer() {
    let mut h = home();
    let fx = h.close();
    assert_eq!(fx.timers, [(Due::Watchdog, Timer::Arm(WATCHDOG))]);
    assert_eq!(ops(&mut h), [Op { seq: 1, kind: OpKind::Close(CloseReason::Closed) }]);
    assert!(!h.phase().is_live());
    assert_eq!(h.close(), Effects::default(), "once");
    assert_eq!(h.drop_stream(), Effects::default(), "not open");
    let fx = h.notice(closed(CloseReason::Closed, 0));
    assert!(fx.closed.is_some());
}

#[test]
fn shutdown_closes_then_forces() {
    let mut h = home();
    let _ = h.shutdown();
    let _ = h.force_close();
    let kinds: Vec<OpKind> = ops(&mut h).into_iter().map(|o| o.kind).collect();
    assert_eq!(kinds, [OpKind::Close(CloseReason::Shutdown), OpKind::ForceClose]);
    let _ = h.close_here(CloseInfo { reason: CloseReason::Shutdown, undelivered: 0 });
    assert!((h.phase() == Phase::Closed));
    assert_eq!(h.force_close(), Effects::default());
}

#[test]
fn a_channel_the_store_lost_is_watched_until_it_closes() {
    let mut h = home();
    assert_eq!(h.missing().timers, [(Due::Watchdog, Timer::Arm(WATCHDOG))]);
    let fx = h.deadline(Due::Watchdog);
    assert_eq!(fx.closed, Some(CloseInfo { reason: CloseReason::StoreLost, undelivered: 0 }));
    assert_eq!(h.missing(), Effects::default());
}

#[test]
fn the_application_leaving_tells_the_store_once_open() {
    let mut h = home();
    let _ = h.app_dropped();
    assert_eq!(ops(&mut h), [Op { seq: 1, kind: OpKind::Gone }]);
    let mut h = home();
    let _ = h.notice(closed(CloseReason::Closed, 0));
    let _ = h.app_dropped();
    assert!(ops(&mut h).is_empty(), "closed: nothing to tell");
}

// --- properties ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum Input {
    /// Messages from `first` (relative to what was delivered), `n` of them.
    Messages {
        back: u8,
        n: u8,
    },
    Recv,
    Send(u8),
    Take {
        ops: u8,
        bytes: u8,
    },
    Flush,
    Suspend,
    Resume,
    AppGone,
    Close,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (0u8..4, 0u8..5).prop_map(|(back, n)| Input::Messages { back, n }),
        3 => Just(Input::Recv),
        3 => (0u8..40).prop_map(Input::Send),
        2 => (1u8..4, 1u8..60).prop_map(|(ops, bytes)| Input::Take { ops, bytes }),
        2 => Just(Input::Flush),
        1 => Just(Input::Suspend),
        1 => Just(Input::Resume),
        1 => Just(Input::AppGone),
        1 => Just(Input::Close),
    ]
}

/// The I/O layer, reduced to what it counts.
#[derive(Default)]
struct Io {
    /// The server's held bytes: raised before a notice, lowered after.
    held: usize,
    received: Vec<u64>,
    listed: bool,
    taken: Vec<Op>,
    flushable: Vec<usize>,
}

impl Io {
    fn apply(&mut self, fx: Effects) {
        if fx.write {
            assert!(!self.listed, "listed twice with the writer");
            self.listed = true;
        }
        self.held -= fx.released;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the inputs: the application gets each message once and in
    /// order; the held bytes counted never fall below what the inbox holds
    /// (and equal it after each step); operations leave numbered 1, 2, 3…
    /// with the home listed at most once and whenever some wait.
    #[test]
    fn accounting_and_order_hold(inputs in proptest::collection::vec(input(), 1..150)) {
        let mut h = home();
        let mut io = Io::default();
        let mut next = 0u64;
        let mut epoch = 0;
        for input in &inputs {
            match *input {
                Input::Messages { back, n } => {
                    let first = next.saturating_sub(u64::from(back));
                    let ms: Vec<String> = (first..first + u64::from(n)).map(|i| format!("m{i}")).collect();
                    next = next.max(first + u64::from(n));
                    io.held += ms.iter().map(String::len).sum::<usize>();
                    let fx = h.notice(Notice::Messages { cid: "c".into(), ser: 1, first, messages: ms });
                    io.apply(fx);
                }
                Input::Recv => {
                    let (ev, fx) = h.recv();
                    io.apply(fx);
                    if let Some(ConnectionEvent::Message(m)) = ev {
                        let id: u64 = m[1..].parse().expect("m<id>");
                        prop_assert!(io.received.last().is_none_or(|l| id == l + 1), "{} after {:?}", id, io.received.last());
                        io.received.push(id);
                    }
                }
                Input::Send(n) => {
                    let (_, fx) = h.send(Bytes::from(vec![b'x'; n as usize]));
                    io.apply(fx);
                }
                Input::Take { ops, bytes } => {
                    if io.listed {
                        let before = io.taken.len();
                        io.listed = h.take_ops(&mut io.taken, ops as usize, bytes as usize);
                        prop_assert!(io.taken.len() > before, "a listed home has operations");
                        for op in &io.taken[before..] {
                            if let OpKind::Send(d) = &op.kind {
                                io.flushable.push(d.len());
                            }
                        }
                    }
                }
                Input::Flush => {
                    if let Some(b) = io.flushable.pop() {
                        h.flushed(b);
                    }
                }
                Input::Suspend => {
                    epoch += 1;
                    let fx = h.notice(suspended(epoch));
                    io.apply(fx);
                }
                Input::Resume => {
                    let fx = h.notice(resumed());
                    io.apply(fx);
                }
                Input::AppGone => {
                    let fx = h.app_dropped();
                    io.apply(fx);
                }
                Input::Close => {
                    let fx = h.close();
                    io.apply(fx);
                }
            }
            prop_assert_eq!(io.held, h.inbox.bytes(), "held bytes counted exactly");
        }
        while io.listed {
            io.listed = h.take_ops(&mut io.taken, 1, 1);
        }
        let seqs: Vec<u64> = io.taken.iter().map(|o| o.seq).collect();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        prop_assert_eq!(seqs, want);
        prop_assert!(h.outbox.is_empty(), "every operation reached the writer");
    }
}
