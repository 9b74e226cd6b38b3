//! The one owner of this instance's homes and held streams: the maps by
//! serial, client id and stream token, the notices kept for channels
//! being made here, and where a notice goes. Its lock is held for map work
//! only; callers apply what they get after it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use super::held::{Held, HeldExit};
use super::home::{Home, HomeExit};
use super::notice::Notice;
use super::ops::Holders;
use crate::server::app::ChannelApp;
use crate::server::metrics::{hold_within, release};

#[derive(Default)]
struct Maps {
    homes: HashMap<u64, Arc<Home>>,
    /// The newest live channel of each client id homed here.
    by_cid: HashMap<Arc<str>, u64>,
    /// Notices for channels being made here (attaches in flight by id).
    pending: HashMap<Arc<str>, (usize, Vec<Notice>)>,
    held: HashMap<Arc<str>, Arc<Held>>,
}

/// Where a notice goes.
pub(crate) enum Route {
    Home(Arc<Home>, Notice),
    Held(Arc<Held>, Notice),
    /// Kept for a channel whose attach is in flight.
    Kept,
    /// No home or stream here (any more).
    Nowhere(Notice),
}

#[derive(Default)]
pub(crate) struct Registry {
    maps: Mutex<Maps>,
    /// Homes here and the attaches that may make one (`--max-clients`):
    /// taken before the attach, given back when it made none or when its
    /// home closes.
    places: AtomicUsize,
    /// A home closed (shutdown waits on it).
    closed_one: Notify,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_held(&self, held: Arc<Held>) {
        self.lock().held.insert(held.tok.clone(), held);
    }

    /// Takes a place for a home an attach may make, if fewer than `max`
    /// are taken.
    pub(crate) fn take_place(&self, max: usize) -> bool {
        hold_within(&self.places, 1, max)
    }

    /// The attach that took a place made no home.
    pub(crate) fn give_place(&self) {
        release(&self.places, 1);
    }

    /// Homes here that are not closed.
    pub(crate) fn live_homes(&self) -> Vec<Arc<Home>> {
        let homes: Vec<Arc<Home>> = self.lock().homes.values().cloned().collect();
        homes.into_iter().filter(|h| !h.is_closed()).collect()
    }

    pub(crate) fn lookup(&self, cid: &str) -> Option<Arc<Home>> {
        let maps = self.lock();
        let ser = maps.by_cid.get(cid)?;
        maps.homes.get(ser).cloned()
    }

    /// Streams held here.
    pub(crate) fn helds(&self) -> Vec<Arc<Held>> {
        self.lock().held.values().cloned().collect()
    }

    /// An attach of `cid` is in flight: its channel may be made here, and
    /// notices for it may come before the answer.
    pub(crate) fn attaching(&self, cid: &Arc<str>) {
        self.lock().pending.entry(cid.clone()).or_default().0 += 1;
    }

    /// The attach of `cid` was answered, and `home` is the channel it made
    /// here, if it did: registered in the same step as the notices kept
    /// meanwhile are taken, so that none falls between. Returns those
    /// notices, and whether `cid` had a home here before.
    pub(crate) fn attached(&self, cid: &Arc<str>, home: Option<&Arc<Home>>) -> (Vec<Notice>, bool) {
        let mut maps = self.lock();
        let kept = match maps.pending.get_mut(cid) {
            Some((n, kept)) => {
                *n -= 1;
                let kept = std::mem::take(kept);
                if *n == 0 {
                    maps.pending.remove(cid);
                }
                kept
            }
            None => Vec::new(),
        };
        let homed = maps.by_cid.contains_key(cid);
        if let Some(home) = home {
            maps.homes.insert(home.ser, home.clone());
            maps.by_cid.insert(cid.clone(), home.ser);
        }
        (kept, homed)
    }

    /// Where notice `n` goes; kept if its channel is being made here.
    pub(crate) fn route(&self, n: Notice) -> Route {
        let mut maps = self.lock();
        if let Some(tok) = n.held_target() {
            return match maps.held.get(tok) {
                Some(h) => Route::Held(h.clone(), n),
                None => Route::Nowhere(n),
            };
        }
        let Some((cid, ser)) = n.home_target() else { return Route::Nowhere(n) };
        if let Some(h) = maps.homes.get(&ser) {
            return Route::Home(h.clone(), n);
        }
        match maps.pending.get_mut(cid) {
            Some((_, kept)) => {
                kept.push(n);
                Route::Kept
            }
            None => Route::Nowhere(n),
        }
    }

    /// Queues an encoded message for every channel homed here; returns how
    /// many took it.
    pub(crate) fn broadcast_here(&self, data: &Bytes) -> usize {
        let homes = self.live_homes();
        homes.iter().filter(|h| h.send_encoded(data.clone()).is_ok()).count()
    }

    /// Notified each time a home closes.
    pub(crate) fn closed_one(&self) -> &Notify {
        &self.closed_one
    }
}

impl HomeExit for Registry {
    fn home_closed(&self, cid: &Arc<str>, ser: u64) {
        let mut maps = self.lock();
        let left = maps.homes.remove(&ser).is_some();
        if maps.by_cid.get(cid) == Some(&ser) {
            maps.by_cid.remove(cid);
        }
        drop(maps);
        if left {
            self.give_place();
        }
        self.closed_one.notify_waiters();
    }
}

impl HeldExit for Registry {
    fn forget_held(&self, held: &Held) {
        let mut maps = self.lock();
        if maps.held.get(&held.tok).is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), held)) {
            maps.held.remove(&held.tok);
        }
    }
}

impl Holders for Registry {
    fn to_held(&self, n: Notice) {
        if let Route::Held(held, n) = self.route(n) {
            held.notice(n);
        }
    }
}
