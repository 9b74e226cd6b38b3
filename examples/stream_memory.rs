//! What one idle stream costs the library server's heap, counted by the
//! allocator rather than guessed from the resident set (`cargo run
//! --release --example stream_memory [STREAMS]`, docs/performance.md):
//! the bytes and blocks live per connection that has sent nothing yet (its
//! task waiting for a request head), then per stream open on the direct
//! path with its `Connection` held by the application, then the kernel's
//! TCP memory per socket pair (`/proc/net/sockstat`, both ends on loopback).
//!
//! The clients are blocking sockets of this process: they allocate nothing
//! on the heap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use ssechan::server::{Server, ServerConfig};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are only read.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: ptr came from alloc/realloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for dealloc, and new_size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_BLOCKS.load(Ordering::Relaxed))
}

/// The kernel's TCP memory in bytes (`TCP: … mem PAGES`).
fn tcp_mem() -> isize {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|p| p.parse::<isize>().ok())
        .unwrap_or(0);
    pages * 4096
}

fn report(what: &str, n: usize, before: (isize, isize), after: (isize, isize)) {
    let n = n as isize;
    println!(
        "{what:<44} {:>6} B in {:>5.1} blocks per stream",
        (after.0 - before.0) / n,
        (after.1 - before.1) as f64 / n as f64
    );
}

/// Waits until `done` holds, for at most 60 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "{what}: not after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the tasks free once done (e.g. a request head) is freed by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(2000), |s| s.parse())?;
    ssechan::sys::raise_open_file_limit(2 * n as u64 + 100);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        // The first sockets wait for their turn to send a head while the
        // rest connect: on a busy machine longer than the default 10 s.
        let config = ServerConfig { request_timeout: Duration::from_secs(120), ..Default::default() };
        let mut server = Server::bind("127.0.0.1:0", config).await?;
        let addr = server.local_addr();
        let handle = server.handle();
        let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(c) = server.accept().await {
                held.push(c);
                let _ = held_tx.send(held.len());
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;

        let (base, kbase) = (live(), tcp_mem());
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            socks.push(std::net::TcpStream::connect(addr)?);
        }
        until("connections accepted", || handle.stats().connections >= n).await?;
        let connected = live();
        report("connected, no request yet (task, head buffer)", n, base, connected);

        let mut buf = [0u8; 512];
        for (i, s) in socks.iter_mut().enumerate() {
            let req = format!(
                "GET /sse?sseClientId=m{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            );
            s.write_all(req.as_bytes())?;
        }
        for s in socks.iter_mut() {
            // The head and the retry prelude.
            let mut got = Vec::new();
            while !got.windows(2).any(|w| w == b"\n\n") {
                let k = s.read(&mut buf)?;
                anyhow::ensure!(k > 0, "closed before the stream started: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..k]);
            }
        }
        let mut held = 0;
        until("connections held by the application", || {
            while let Ok(h) = held_rx.try_recv() {
                held = h;
            }
            held >= n
        })
        .await?;
        let streaming = live();
        report("idle stream, Connection held (whole)", n, base, streaming);
        report("  of which the request and the stream", n, connected, streaming);
        let kernel = tcp_mem() - kbase;
        println!(
            "{:<44} {:>6} B per socket pair (kernel TCP memory, both ends)",
            "kernel",
            kernel / n as isize
        );
        Ok(())
    })
}
