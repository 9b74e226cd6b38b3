//! What an instance tells the store every [`REPORT_EVERY`], in one call:
//! the streams' cursors (which bound the queue and the replay in the
//! store), what the applications took (room for more POSTs), and how far
//! its inbound stream was read (trimmed). Events streams found lost go as
//! requests owed to the store. Streams and homes list themselves when they
//! have something to report, once until it is taken.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use super::link::Link;
use super::owed::Owed;
use super::requests::Request;

/// How often streams' cursors and applications' progress go to the store.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// A stream whose cursor moved.
pub(crate) trait CursorSource: Send + Sync {
    fn cid(&self) -> &str;
    /// The cursor to report, if it moved: serial, event id, data bytes
    /// through it.
    fn cursor(&self) -> Option<(u64, u64, u64)>;
    /// A report that failed: sent again next time.
    fn unreport(&self);
}

/// A home whose application took messages.
pub(crate) trait TakenSource: Send + Sync {
    fn target(&self) -> (&str, u64);
    /// Messages taken since the last report, and their bytes; reset.
    fn take_taken(&self) -> (u64, u64);
    /// A report that failed: counted again next time.
    fn untake(&self, count: u64, bytes: u64);
}

/// Events found missing by a stream: client id, serial, first, last.
type LostEvents = (Arc<str>, u64, u64, u64);

#[derive(Default)]
pub(crate) struct Reporter {
    cursors: Mutex<Vec<Arc<dyn CursorSource>>>,
    taken: Mutex<Vec<Arc<dyn TakenSource>>>,
    lost: Mutex<Vec<LostEvents>>,
    /// The inbound stream is read through this id (for trimming it).
    read_through: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reporter {
    pub(crate) fn list_cursor(&self, source: Arc<dyn CursorSource>) {
        lock(&self.cursors).push(source);
    }

    pub(crate) fn list_taken(&self, source: Arc<dyn TakenSource>) {
        lock(&self.taken).push(source);
    }

    pub(crate) fn lost(&self, cid: Arc<str>, ser: u64, first: u64, last: u64) {
        lock(&self.lost).push((cid, ser, first, last));
    }

    /// The inbound stream was read up to (not including) `id`.
    pub(crate) fn read_through(&self, id: Option<String>) {
        *lock(&self.read_through) = id;
    }

    /// Reports until `stop`.
    pub(crate) async fn run(
        self: Arc<Self>,
        link: Link,
        owed: Arc<Owed>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REPORT_EVERY) => {}
                _ = stop.changed() => return,
            }
            self.report(&link, &owed).await;
        }
    }

    async fn report(&self, link: &Link, owed: &Arc<Owed>) {
        let helds = std::mem::take(&mut *lock(&self.cursors));
        let homes = std::mem::take(&mut *lock(&self.taken));
        let lost = std::mem::take(&mut *lock(&self.lost));
        let read = lock(&self.read_through).take();
        let cursors: Vec<_> = helds.iter().filter_map(|h| Some((h.clone(), h.cursor()?))).collect();
        let taken: Vec<_> = homes
            .iter()
            .map(|h| (h.clone(), h.take_taken()))
            .filter(|(_, (n, _))| *n > 0)
            .collect();
        for (cid, ser, first, last) in lost {
            owed.retry_until_done("reporting lost events", move || Request::Lost {
                cid: cid.clone(),
                ser,
                first,
                last,
            });
        }
        if cursors.is_empty() && taken.is_empty() && read.is_none() {
            return;
        }
        let r = link
            .call("report", |inv| {
                inv.arg(read.as_deref().unwrap_or(""));
                inv.arg(cursors.len());
                for (h, (ser, sent, cum)) in &cursors {
                    inv.arg(h.cid()).arg(ser).arg(sent).arg(cum);
                }
                inv.arg(taken.len());
                for (h, (n, bytes)) in &taken {
                    let (cid, ser) = h.target();
                    inv.arg(cid).arg(ser).arg(n).arg(bytes);
                }
            })
            .await;
        if let Err(e) = r {
            debug!("report: {e}; again next time");
            for (h, _) in &cursors {
                h.unreport();
            }
            for (h, (n, bytes)) in taken {
                h.untake(n, bytes);
            }
            let mut rt = lock(&self.read_through);
            if rt.is_none() {
                *rt = read;
            }
        }
    }
}
