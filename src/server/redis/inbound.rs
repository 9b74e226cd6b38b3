//! The instance's reader: one `XREAD BLOCK`, on a connection of its own,
//! over its inbound stream (what the store and the other instances tell
//! it: messages for its homes, events and detaches for its streams,
//! lifecycle for its homes) and the broadcast stream; and the dispatch of
//! each notice to its home or stream here.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::link::{self, Link};
use super::notice::{self, Broadcast, Notice};
use super::registry::{Registry, Route};
use super::report::Reporter;
use crate::text::escape_controls;

/// Reads until `stop`; how far the inbound stream was read goes to the
/// reporter (which trims it).
pub(crate) async fn read_loop(
    link: Link,
    registry: Arc<Registry>,
    reporter: Arc<Reporter>,
    mut stop: watch::Receiver<bool>,
) {
    let me = link.header.me.clone();
    let (in_key, b_key) = (link.key(&format!("i:{me}")), link.key("b"));
    let mut last_in = "0-0".to_owned();
    let mut last_b: Option<String> = None;
    let mut last_seq: Option<u64> = None;
    let mut conn = None;
    let mut retry = link::retry(Duration::from_secs(1));
    loop {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match link.reader_connection().await {
                Ok(c) => c,
                Err(e) => {
                    debug!("reader: {e}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry.wait()) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
        };
        let read = async {
            if last_b.is_none() {
                // Broadcasts from now on: channels homed here are new.
                let v: Value = redis::cmd("XREVRANGE")
                    .arg(&b_key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await?;
                let newest = notice::entries(&v).and_then(|e| e.into_iter().next());
                last_b = Some(newest.map_or_else(|| "0-0".to_owned(), |(id, _)| id));
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(1024).arg("BLOCK").arg(link::READ_BLOCK.as_millis() as u64);
            cmd.arg("STREAMS").arg(&in_key).arg(&b_key).arg(&last_in).arg(last_b.as_deref());
            cmd.query_async::<Value>(&mut c).await
        };
        let reply = tokio::select! {
            r = read => r,
            _ = stop.changed() => return,
        };
        let streams = match reply.map(|v| notice::xread(&v)) {
            Ok(Some(streams)) => streams,
            Ok(None) => {
                warn!("the store's reply to a read was not understood");
                continue;
            }
            Err(e) => {
                debug!("reader: {e}; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(retry.wait()) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        retry.succeeded();
        conn = Some(c);
        let mut read_in = false;
        for (key, entries) in streams {
            for (id, fields) in entries {
                if key == in_key {
                    let Some(fields) = notice::unpack(fields) else {
                        warn!("ignored an inbound entry this version cannot unpack ({id})");
                        last_in = id;
                        read_in = true;
                        continue;
                    };
                    for n in Notice::parse_all(&fields) {
                        match n {
                            Some(n) => dispatch(&registry, n),
                            None => warn!("ignored a notice this version does not know ({id})"),
                        }
                    }
                    last_in = id;
                    read_in = true;
                } else if key == b_key {
                    if let Some(b) = Broadcast::parse(&fields) {
                        if let Some(prev) = last_seq
                            && b.seq > prev + 1
                        {
                            warn!(
                                lost = b.seq - prev - 1,
                                "broadcasts were gone from the store before this instance read them"
                            );
                        }
                        last_seq = Some(b.seq);
                        if b.origin != me {
                            registry.broadcast_here(&b.data);
                        }
                    }
                    last_b = Some(id);
                }
            }
        }
        // Only news is worth a trim: an idle instance makes no report.
        if read_in {
            reporter.read_through(notice::next_id(&last_in));
        }
    }
}

/// A notice from the inbound stream, to its home or stream here.
fn dispatch(registry: &Registry, n: Notice) {
    if let Notice::Forgotten { evicted, dropped, expired } = n {
        forgotten(evicted, dropped, expired);
        return;
    }
    match registry.route(n) {
        Route::Home(home, n) => home.notice(n),
        Route::Held(held, n) => held.notice(n),
        Route::Kept => {}
        Route::Nowhere(Notice::Messages { cid, messages, .. }) => {
            // The store still gave this instance messages of a channel it
            // has ended here (a shutdown, or a home that stopped answering).
            warn!(
                client = %escape_controls(&cid),
                count = messages.len(),
                "messages for a channel no longer open here: dropped"
            );
        }
        Route::Nowhere(n) => debug!("notice for a channel or stream no longer here: {n:?}"),
    }
}

/// Logs what the store forgot of closed ids, as the memory store words it.
fn forgotten(evicted: u64, dropped: u64, expired: u64) {
    if evicted > 0 {
        warn!(
            messages = evicted,
            "forgot acknowledged out-of-order messages of closed client ids (closed-id memory full)"
        );
    }
    if dropped > 0 {
        warn!(
            messages = dropped,
            "acknowledged out-of-order messages dropped with their connection"
        );
    }
    if expired > 0 {
        warn!(
            messages = expired,
            "forgot acknowledged out-of-order messages of closed client ids (memory period over)"
        );
    }
}
