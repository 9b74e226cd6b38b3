//! What instances tell each other through their inbound streams (written by
//! `channels.lua`), and the script's replies, as plain values: parsed here
//! from what Redis returns, without I/O.

use bytes::Bytes;
use redis::Value;

use crate::server::app::CloseReason;

/// One entry of an instance's inbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// For a home: messages in order, from messageId `first`.
    Messages { cid: String, ser: u64, first: u64, messages: Vec<String> },
    /// For a home: the stream is gone, keep-alive runs (suspension `epoch`).
    Suspended { cid: String, ser: u64, epoch: u64 },
    /// For a home: the client came back.
    Resumed { cid: String, ser: u64 },
    /// For a home: `lost` events from `first` on never reached the client.
    Gap { cid: String, ser: u64, lost: u64, first: u64 },
    /// For a home: the channel closed.
    Closed { cid: String, ser: u64, reason: CloseReason, undelivered: u64 },
    /// For a home: a new id's first message is missing; start its wait.
    FirstWait { cid: String, ser: u64 },
    /// For a holder: events from id `first`; the last is `cum` data bytes
    /// into the channel.
    Events { tok: String, first: u64, cum: u64, data: Vec<Bytes> },
    /// For a holder: its stream is no longer the channel's.
    Detach { tok: String },
    /// For a holder, from the writer here (never in an inbound stream): the
    /// store has the channel's events through `last`. A batch whose reply
    /// was lost is applied again, and the events it had made are read back
    /// from the event stream.
    Stored { tok: String, last: u64 },
    /// For a holder: write the events through `last`, then the control
    /// close; or (`quiet`: the client left) end the stream at once. Either
    /// way the store hears what it wrote. `home`, `reason` and `lost` are
    /// for telling the home.
    Final { tok: String, last: u64, reason: CloseReason, lost: u64, home: String, quiet: bool },
    /// For the caller of a change: acknowledged out-of-order messages of
    /// closed ids it forgot (evicted for room, dropped with their channel,
    /// remembered for the whole memory period).
    Forgotten { evicted: u64, dropped: u64, expired: u64 },
}

/// A broadcast from instance `origin`, number `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broadcast {
    pub origin: String,
    pub seq: u64,
    pub data: Bytes,
}

/// A stream entry: its id and its fields in order.
pub(crate) type Entry = (String, Vec<(Bytes, Bytes)>);

pub(crate) fn reason_code(r: CloseReason) -> &'static str {
    match r {
        CloseReason::Closed => "c",
        CloseReason::ClosedByClient => "l",
        CloseReason::StreamEnded => "e",
        CloseReason::KeepAliveExpired => "k",
        CloseReason::SlowConsumer => "w",
        CloseReason::Shutdown => "h",
        CloseReason::StoreLost => "s",
    }
}

fn reason_of(code: &[u8]) -> Option<CloseReason> {
    Some(match code {
        b"c" => CloseReason::Closed,
        b"l" => CloseReason::ClosedByClient,
        b"e" => CloseReason::StreamEnded,
        b"k" => CloseReason::KeepAliveExpired,
        b"w" => CloseReason::SlowConsumer,
        b"h" => CloseReason::Shutdown,
        b"s" => CloseReason::StoreLost,
        _ => return None,
    })
}

/// The bytes of a string-like value.
pub(crate) fn bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Int(i) => Some(Bytes::from(i.to_string())),
        Value::Okay => Some(Bytes::from_static(b"OK")),
        _ => None,
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    String::from_utf8(bytes(v)?.to_vec()).ok()
}

pub(crate) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => std::str::from_utf8(&bytes(v)?).ok()?.parse().ok(),
    }
}

pub(crate) fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// `[id, [field, value, ...]]` as a stream entry.
pub(crate) fn entry(v: &Value) -> Option<Entry> {
    let [id, fields] = array(v)? else { return None };
    let fields = array(fields)?;
    let pairs = fields.chunks_exact(2).map(|p| Some((bytes(&p[0])?, bytes(&p[1])?)));
    Some((text(id)?, pairs.collect::<Option<Vec<_>>>()?))
}

/// The entries of each stream an `XREAD` returned, by stream key (RESP2:
/// an array of `[key, entries]`; nil when nothing came).
pub(crate) fn xread(v: &Value) -> Option<Vec<(String, Vec<Entry>)>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Map(streams) => {
            streams.iter().map(|(k, es)| Some((text(k)?, entries(es)?))).collect()
        }
        _ => array(v)?
            .iter()
            .map(|s| {
                let [k, es] = array(s)? else { return None };
                Some((text(k)?, entries(es)?))
            })
            .collect(),
    }
}

pub(crate) fn entries(v: &Value) -> Option<Vec<Entry>> {
    array(v)?.iter().map(entry).collect()
}

/// An inbound entry's fields: `channels.lua` packs them into one field,
/// `p`, as `<length>:<bytes>` for each name and value in turn (one value
/// for Redis to store and reply and for the reader to parse, instead of a
/// dozen per notice); an entry of any other shape is taken as it is.
/// `None` when the packing is broken.
pub(crate) fn unpack(fields: Vec<(Bytes, Bytes)>) -> Option<Vec<(Bytes, Bytes)>> {
    let packed = match fields.as_slice() {
        [(k, packed)] if k == "p" => packed.clone(),
        _ => return Some(fields),
    };
    let (mut out, mut rest, mut name) = (Vec::new(), packed, None);
    while !rest.is_empty() {
        let colon = rest.iter().take(20).position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let end = (colon + 1).checked_add(len).filter(|&e| e <= rest.len())?;
        let value = rest.slice(colon + 1..end);
        rest = rest.slice(end..);
        match name.take() {
            None => name = Some(value),
            Some(n) => out.push((n, value)),
        }
    }
    name.is_none().then_some(out)
}

/// The sequence part of a stream id `MS-SEQ` (our event ids are `0-N`).
pub(crate) fn id_seq(id: &str) -> Option<u64> {
    id.split_once('-')?.1.parse().ok()
}

/// The id just after `id` (`MS-SEQ`): what `XTRIM MINID` keeps from.
pub(crate) fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    Some(format!("{ms}-{}", seq.parse::<u64>().ok()?.checked_add(1)?))
}

/// Field access on an entry's pairs: the first value of `name`, and all
/// values of `d`.
struct Fields<'a>(&'a [(Bytes, Bytes)]);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v)
    }

    fn text(&self, name: &str) -> Option<String> {
        String::from_utf8(self.get(name)?.to_vec()).ok()
    }

    fn int(&self, name: &str) -> Option<u64> {
        std::str::from_utf8(self.get(name)?).ok()?.parse().ok()
    }

    fn data(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter().filter(|(k, _)| k == "d").map(|(_, v)| v)
    }
}

impl Notice {
    /// An inbound entry's notices (each begins with its `t` field); `None`
    /// for one this version does not know (logged by the caller).
    pub(crate) fn parse_all(fields: &[(Bytes, Bytes)]) -> Vec<Option<Notice>> {
        let starts: Vec<usize> =
            fields.iter().enumerate().filter(|(_, (k, _))| k == "t").map(|(i, _)| i).collect();
        starts
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let end = starts.get(n + 1).copied().unwrap_or(fields.len());
                Notice::parse(&fields[i..end])
            })
            .collect()
    }

    /// One notice's fields.
    pub(crate) fn parse(fields: &[(Bytes, Bytes)]) -> Option<Notice> {
        let f = Fields(fields);
        let cid = || f.text("c");
        let ser = || f.int("s");
        let tok = || f.text("k");
        Some(match f.get("t")?.as_ref() {
            b"m" => {
                let messages = f
                    .data()
                    .map(|d| String::from_utf8(d.to_vec()).ok())
                    .collect::<Option<Vec<_>>>()?;
                Notice::Messages { cid: cid()?, ser: ser()?, first: f.int("n")?, messages }
            }
            b"S" => Notice::Suspended { cid: cid()?, ser: ser()?, epoch: f.int("p")? },
            b"R" => Notice::Resumed { cid: cid()?, ser: ser()? },
            b"G" => Notice::Gap { cid: cid()?, ser: ser()?, lost: f.int("l")?, first: f.int("f")? },
            b"C" => Notice::Closed {
                cid: cid()?,
                ser: ser()?,
                reason: reason_of(f.get("r")?)?,
                undelivered: f.int("u")?,
            },
            b"W" => Notice::FirstWait { cid: cid()?, ser: ser()? },
            b"e" => Notice::Events {
                tok: tok()?,
                first: f.int("i")?,
                cum: f.int("x")?,
                data: f.data().cloned().collect(),
            },
            b"x" => Notice::Detach { tok: tok()? },
            b"o" => Notice::Forgotten {
                evicted: f.int("e")?,
                dropped: f.int("d")?,
                expired: f.int("x")?,
            },
            b"f" => Notice::Final {
                tok: tok()?,
                last: f.int("i")?,
                reason: reason_of(f.get("r")?)?,
                lost: f.int("l")?,
                home: f.text("h")?,
                quiet: f.get("q").is_some_and(|q| q == "1"),
            },
            _ => return None,
        })
    }

    /// The client id and serial of a notice for a home.
    pub(crate) fn home_target(&self) -> Option<(&str, u64)> {
        match self {
            Notice::Messages { cid, ser, .. }
            | Notice::Suspended { cid, ser, .. }
            | Notice::Resumed { cid, ser }
            | Notice::Gap { cid, ser, .. }
            | Notice::Closed { cid, ser, .. }
            | Notice::FirstWait { cid, ser } => Some((cid, *ser)),
            _ => None,
        }
    }

    /// The stream token of a notice for a holder.
    pub(crate) fn held_target(&self) -> Option<&str> {
        match self {
            Notice::Events { tok, .. }
            | Notice::Detach { tok }
            | Notice::Final { tok, .. }
            | Notice::Stored { tok, .. } => Some(tok),
            _ => None,
        }
    }
}

impl Broadcast {
    pub(crate) fn parse(fields: &[(Bytes, Bytes)]) -> Option<Broadcast> {
        let f = Fields(fields);
        Some(Broadcast { origin: f.text("o")?, seq: f.int("q")?, data: f.get("d")?.clone() })
    }
}

/// An event as the store keeps it: id, encoded data, data bytes through it.
pub(crate) type StoredEvent = (u64, Bytes, u64);

/// `0-N` entries with fields `d` and `c`, as `XRANGE` returns them.
pub(crate) fn stored_events(v: &Value) -> Option<Vec<StoredEvent>> {
    entries(v)?.into_iter().map(|(id, fields)| stored_event(&id, &fields)).collect()
}

fn stored_event(id: &str, fields: &[(Bytes, Bytes)]) -> Option<StoredEvent> {
    let f = Fields(fields);
    Some((id_seq(id)?, f.get("d")?.clone(), f.int("c")?))
}

/// The events of an `Events` notice with each one's byte count: the notice
/// carries the count through its last event only.
pub(crate) fn with_cums(first: u64, cum: u64, data: Vec<Bytes>) -> Vec<StoredEvent> {
    let mut through = cum;
    let mut out: Vec<StoredEvent> = data
        .into_iter()
        .enumerate()
        .rev()
        .map(|(i, d)| {
            let ev = (first + i as u64, d, through);
            through = through.saturating_sub(ev.1.len() as u64);
            ev
        })
        .collect();
    out.reverse();
    out
}

/// The reply to `attach`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attached {
    /// A new channel homed here.
    New { ser: u64, next_message: u64 },
    /// An existing channel: send from `start`; the store holds events
    /// through `last`, `events` are the first of them.
    Existing {
        ser: u64,
        home: String,
        start: u64,
        last: u64,
        how: How,
        ahead: bool,
        /// Events sent again: they had been handed to a stream before.
        replayed: u64,
        events: Vec<StoredEvent>,
    },
    /// No new channel may be made here now.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    Resumed,
    TookOver,
    /// Attached to a channel without a stream that was not suspended (one
    /// whose stream was just lost).
    Attached,
}

impl Attached {
    pub(crate) fn parse(v: &Value) -> Option<Attached> {
        let a = array(v)?;
        Some(match bytes(a.first()?)?.as_ref() {
            b"new" => Attached::New { ser: int(a.get(1)?)?, next_message: int(a.get(2)?)? },
            b"full" => Attached::Full,
            b"att" => {
                let how = match bytes(a.get(5)?)?.as_ref() {
                    b"resumed" => How::Resumed,
                    b"took" => How::TookOver,
                    _ => How::Attached,
                };
                let events = a
                    .get(8..)?
                    .chunks_exact(3)
                    .map(|e| Some((id_seq(&text(&e[0])?)?, bytes(&e[1])?, int(&e[2])?)))
                    .collect::<Option<Vec<_>>>()?;
                Attached::Existing {
                    ser: int(a.get(1)?)?,
                    home: text(a.get(2)?)?,
                    start: int(a.get(3)?)?,
                    last: int(a.get(4)?)?,
                    how,
                    ahead: int(a.get(6)?)? == 1,
                    replayed: int(a.get(7)?)?,
                    events,
                }
            }
            _ => return None,
        })
    }
}

/// The reply to `post`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Posted {
    Stored,
    Duplicate,
    Unknown,
    AppGone,
    HomeDead,
    Busy,
    TooFarAhead {
        next: u64,
    },
    ReorderFull {
        bytes: u64,
    },
    /// The out-of-order bytes of all channels reached `limit`.
    Full {
        limit: u64,
    },
}

impl Posted {
    pub(crate) fn parse(v: &Value) -> Option<Posted> {
        let a = array(v)?;
        let arg = || a.get(1).and_then(int);
        Some(match bytes(a.first()?)?.as_ref() {
            b"ok" => Posted::Stored,
            b"dup" => Posted::Duplicate,
            b"unknown" => Posted::Unknown,
            b"gone" => Posted::AppGone,
            b"dead" => Posted::HomeDead,
            b"busy" => Posted::Busy,
            b"far" => Posted::TooFarAhead { next: arg()? },
            b"qfull" => Posted::ReorderFull { bytes: arg()? },
            b"full" => Posted::Full { limit: arg()? },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn fields(kv: &[&str]) -> Vec<(Bytes, Bytes)> {
        kv.chunks(2)
            .map(|p| {
                (Bytes::copy_from_slice(p[0].as_bytes()), Bytes::copy_from_slice(p[1].as_bytes()))
            })
            .collect()
    }

    #[test]
    fn packed_entries_unpack_into_their_fields() {
        // As channels.lua's send_notices writes two notices: a value may
        // hold the separator, be empty, or run to many digits of length.
        let data = "a:b\n9:x".repeat(2);
        let packed = format!("1:t1:m1:c2:c11:s1:71:n1:01:d{}:{data}1:t1:x1:k0:", data.len());
        let got = unpack(vec![(Bytes::from("p"), Bytes::from(packed))]).expect("unpacks");
        let want = ["t", "m", "c", "c1", "s", "7", "n", "0", "d", &data, "t", "x", "k", ""];
        let want: Vec<(Bytes, Bytes)> = want
            .chunks_exact(2)
            .map(|p| (Bytes::from(p[0].to_owned()), Bytes::from(p[1].to_owned())))
            .collect();
        assert_eq!(got, want);
        let all = Notice::parse_all(&got);
        assert!(matches!(&all[0], Some(Notice::Messages { messages, .. }) if messages == &[data]));
        assert_eq!(all[1], Some(Notice::Detach { tok: String::new() }));
        // Unpacked fields (an older writer) are taken as they are.
        let plain = fields(&["t", "x", "k", "t1"]);
        assert_eq!(unpack(plain.clone()), Some(plain));
        // Broken packing: a length past the end, no colon, a name without
        // its value, a length that is not a number.
        for bad in ["5:ab", "ab", "1:t", "x:t1:m", "1:t1:m3:ab"] {
            assert_eq!(unpack(vec![(Bytes::from("p"), Bytes::from(bad))]), None, "{bad}");
        }
    }

    #[test]
    fn notices_parse_from_their_fields() {
        let m = fields(&["t", "m", "c", "id:1", "s", "7", "n", "3", "d", "a", "d", "b\nc"]);
        assert_eq!(
            Notice::parse(&m),
            Some(Notice::Messages {
                cid: "id:1".into(),
                ser: 7,
                first: 3,
                messages: vec!["a".into(), "b\nc".into()]
            })
        );
        let e = fields(&["t", "e", "c", "x", "s", "1", "k", "I/4", "i", "5", "x", "30", "d", "ab"]);
        let n = Notice::parse(&e).expect("events");
        assert_eq!(n.held_target(), Some("I/4"));
        assert_eq!(n.home_target(), None);
        let f = fields(&[
            "t", "f", "c", "x", "s", "1", "k", "I/4", "i", "9", "r", "w", "l", "2", "h", "H",
        ]);
        assert_eq!(
            Notice::parse(&f),
            Some(Notice::Final {
                tok: "I/4".into(),
                last: 9,
                reason: CloseReason::SlowConsumer,
                lost: 2,
                home: "H".into(),
                quiet: false,
            })
        );
        let two = fields(&[
            "t", "R", "c", "a", "s", "1", "t", "?", "t", "x", "c", "b", "s", "2", "k", "T",
        ]);
        assert_eq!(
            Notice::parse_all(&two),
            [
                Some(Notice::Resumed { cid: "a".into(), ser: 1 }),
                None,
                Some(Notice::Detach { tok: "T".into() })
            ]
        );
        let c = fields(&["t", "C", "c", "x", "s", "2", "r", "k", "u", "0"]);
        assert_eq!(
            Notice::parse(&c).and_then(|n| n.home_target().map(|(c, s)| (c.to_owned(), s))),
            Some(("x".into(), 2))
        );
        let o = fields(&["t", "o", "e", "3", "d", "0", "x", "7"]);
        assert_eq!(
            Notice::parse(&o),
            Some(Notice::Forgotten { evicted: 3, dropped: 0, expired: 7 })
        );
        // Unknown kinds, missing fields and a bad reason are refused.
        assert_eq!(Notice::parse(&fields(&["t", "?"])), None);
        assert_eq!(Notice::parse(&fields(&["t", "S", "c", "x", "s", "1"])), None);
        assert_eq!(
            Notice::parse(&fields(&["t", "C", "c", "x", "s", "1", "r", "z", "u", "0"])),
            None
        );
    }

    #[test]
    fn every_close_reason_survives_the_round_trip() {
        for r in [
            CloseReason::Closed,
            CloseReason::ClosedByClient,
            CloseReason::StreamEnded,
            CloseReason::KeepAliveExpired,
            CloseReason::SlowConsumer,
            CloseReason::Shutdown,
            CloseReason::StoreLost,
        ] {
            assert_eq!(reason_of(reason_code(r).as_bytes()), Some(r));
        }
    }

    #[test]
    fn each_event_of_a_notice_gets_its_byte_count() {
        let data =
            vec![Bytes::from_static(b"aa"), Bytes::from_static(b"bbb"), Bytes::from_static(b"c")];
        let evs = with_cums(4, 100, data);
        let cums: Vec<(u64, u64)> = evs.iter().map(|(id, _, c)| (*id, *c)).collect();
        assert_eq!(cums, [(4, 96), (5, 99), (6, 100)]);
    }

    #[test]
    fn xread_and_stream_ids() {
        let entry = Value::Array(vec![
            bulk("0-3"),
            Value::Array(vec![bulk("d"), bulk("x"), bulk("c"), bulk("12")]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:o:1"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let streams = xread(&reply).expect("parsed");
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].0, "p:o:1");
        assert_eq!(
            stored_events(&Value::Array(vec![entry])),
            Some(vec![(3, Bytes::from_static(b"x"), 12)])
        );
        assert_eq!(xread(&Value::Nil), Some(Vec::new()));
        assert_eq!(next_id("1700-41").as_deref(), Some("1700-42"));
        assert_eq!(id_seq("0-9"), Some(9));
        assert_eq!(next_id("junk"), None);
    }

    #[test]
    fn script_replies() {
        let att = Value::Array(vec![
            bulk("att"),
            bulk("3"),
            bulk("H"),
            bulk("5"),
            bulk("6"),
            bulk("took"),
            Value::Int(0),
            Value::Int(1),
            bulk("0-5"),
            bulk("data: \"x\"\n\n"),
            bulk("20"),
        ]);
        assert_eq!(
            Attached::parse(&att),
            Some(Attached::Existing {
                ser: 3,
                home: "H".into(),
                start: 5,
                last: 6,
                how: How::TookOver,
                ahead: false,
                replayed: 1,
                events: vec![(5, Bytes::from_static(b"data: \"x\"\n\n"), 20)],
            })
        );
        let new = Value::Array(vec![bulk("new"), bulk("9"), bulk("0")]);
        assert_eq!(Attached::parse(&new), Some(Attached::New { ser: 9, next_message: 0 }));
        let far = Value::Array(vec![bulk("far"), bulk("12")]);
        assert_eq!(Posted::parse(&far), Some(Posted::TooFarAhead { next: 12 }));
        let full = Value::Array(vec![bulk("full"), bulk("1048576")]);
        assert_eq!(Posted::parse(&full), Some(Posted::Full { limit: 1 << 20 }));
        assert_eq!(Posted::parse(&Value::Array(vec![bulk("what")])), None);
    }
}
