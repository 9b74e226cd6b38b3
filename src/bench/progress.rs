//! The live line on a terminal: sent, received, reconnects, current rate.
//! Nothing at all when stderr is not a terminal (CI logs stay clean).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use super::stats::Stats;

const TICK: Duration = Duration::from_millis(250);

pub struct Progress {
    bar: Option<(ProgressBar, JoinHandle<()>)>,
}

impl Progress {
    /// Starts the display if stderr is a terminal. `listen` names the
    /// counters for listen mode (events instead of round trips).
    pub fn start(stats: Arc<Stats>, listen: bool) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let t = stats.totals();
                let (sent, received, reconnects) = (t.sent, t.received, t.reconnects);
                let now = Instant::now();
                let rate = (received - last.1.min(received)) as f64
                    / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, received);
                b.set_message(if listen {
                    format!("events {received}  reconnects {reconnects}  {rate:.0}/s")
                } else {
                    format!(
                        "sent {sent}  received {received}  reconnects {reconnects}  {rate:.0}/s"
                    )
                });
                b.tick();
            }
        });
        Self { bar: Some((bar, task)) }
    }

    pub fn finish(self) {
        if let Some((bar, task)) = self.bar {
            task.abort();
            bar.finish_and_clear();
        }
    }
}
