//! One single-threaded runtime per core for the clients. Each client lives
//! on one thread for good: no work stealing, and no futex wake-up of an
//! idle worker per message, which at a few messages per client per second
//! otherwise costs the bench more CPU than the server it measures.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Runtimes {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtimes {
    /// Starts `threads` runtime threads; 0 picks half the cores (at least
    /// one), leaving the rest to a server on the same machine: measured
    /// here, one thread on two cores costs less CPU per message than two
    /// that wake each other, at the same throughput.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let n = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() / 2),
            n => n,
        }
        .clamp(1, 64);
        let mut me = Self { handles: Vec::new(), stops: Vec::new(), threads: Vec::new() };
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            me.handles.push(rt.handle().clone());
            me.stops.push(stop);
            me.threads.push(std::thread::Builder::new().name(format!("bench-{i}")).spawn(
                move || {
                    // Drives every task spawned on this runtime until told to stop.
                    let _ = rt.block_on(stopped);
                },
            )?);
        }
        Ok(me)
    }

    /// Spawns `fut` on runtime `i % len`.
    pub fn spawn<F>(&self, i: usize, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(fut)
    }

    /// Stops the runtimes; their remaining tasks are dropped.
    pub fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        // The threads end by themselves; nothing waits for them.
        drop(self.threads);
    }
}
