//! `bench --scenario FILE`: replays a recorded session (`connect --record`)
//! with `--clients` clients at once. Each client sends the recorded
//! messages at the recorded times from its stream's opening (divided by
//! `--speed`), and its received messages are compared with the recorded
//! ones (`--expect order`: the same messages in the same order, for a
//! deterministic server; `count`: as many; `none`: only the load). The
//! report says, per step of the recording, how many clients diverged there.
//! The clients are the library's own (reconnecting, resuming, retrying).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::{ChannelClient, ClientConfig, ClientEvent, Mode};
use crate::connect::record::{self, RecordMode, Recorded};

/// Divergent steps kept in the report.
const MAX_DIVERGENCES: usize = 10;
/// Latest time a recording's step may have, and longest replay: a week.
pub const MAX_SPAN_MS: f64 = 7.0 * 24.0 * 3600.0 * 1000.0;
/// Longest message text quoted in a divergence.
const QUOTE: usize = 80;

/// What a replay compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The recorded messages, in the recorded order.
    Order,
    /// As many messages as were recorded.
    Count,
    /// Nothing: the recording is only a load.
    None,
}

/// A recording, reduced to what a replay needs.
#[derive(Debug)]
pub struct Scenario {
    pub url: String,
    pub raw: bool,
    /// Sent messages: ms after the stream opened, and the text.
    pub sends: Vec<(f64, String)>,
    /// Received messages: ms after the stream opened, and the text.
    pub expected: Vec<(f64, String)>,
}

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// A number out of range: the step (from 1), its event, the field and
    /// the value.
    #[error(
        "step {0} ({1:?}): {2} {3} is out of range (0 to {max} ms, a week)",
        max = MAX_SPAN_MS
    )]
    Range(usize, String, &'static str, String),
}

impl Scenario {
    pub fn read(path: &Path) -> Result<Scenario, ScenarioError> {
        let (header, steps) = record::read_file(path)?;
        if header.mode == RecordMode::Mcp {
            return Err(ScenarioError::Record(record::RecordError::Header(
                "a record of `connect --mcp`: --scenario replays channel and raw records".into(),
            )));
        }
        // Every time is checked before any is computed with: 1e308 would
        // panic in a Duration, 1e20 would sleep for ever.
        for (i, s) in steps.iter().enumerate() {
            if !(s.t_ms.is_finite() && (0.0..=MAX_SPAN_MS).contains(&s.t_ms)) {
                let event = s.what.event().to_string();
                let t = super::report::number(s.t_ms);
                return Err(ScenarioError::Range(i + 1, event, "t_ms", t));
            }
        }
        // The timeline starts when the recorded stream opened.
        let origin = steps.iter().find(|s| s.what.event() == "open").map_or(0.0, |s| s.t_ms);
        let mut sc = Scenario {
            url: header.url,
            raw: header.mode == RecordMode::Raw,
            sends: Vec::new(),
            expected: Vec::new(),
        };
        for s in steps {
            let t = (s.t_ms - origin).max(0.0);
            match s.what {
                Recorded::Send { data, .. } => sc.sends.push((t, data)),
                Recorded::Message { data, .. } => sc.expected.push((t, data)),
                Recorded::Other { .. } => {}
            }
        }
        Ok(sc)
    }

    /// The replay's length at `speed` (the last step), if under a week.
    pub fn span(&self, speed: f64) -> Option<Duration> {
        let last = self.sends.iter().chain(&self.expected).map(|s| s.0).fold(0.0, f64::max);
        let ms = last / speed;
        (ms <= MAX_SPAN_MS).then(|| Duration::try_from_secs_f64(ms / 1000.0).ok()).flatten()
    }
}

/// One step where clients first diverged from the recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// The recorded message's number, from 1.
    pub step: usize,
    /// When it was recorded, ms after the stream opened (`null` past the end).
    pub t_ms: Option<f64>,
    pub expected: Option<String>,
    /// What the first such client got instead (`null`: nothing).
    pub got: Option<String>,
    pub clients: u64,
}

/// The scenario part of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenarioReport {
    pub file: String,
    pub expect: Option<Expect>,
    pub speed: f64,
    /// Recorded messages sent and received.
    pub sends: u64,
    pub steps: u64,
    pub matched: u64,
    pub diverged: u64,
    /// The first steps where clients diverged, earliest first.
    pub divergences: Vec<Divergence>,
}

impl ScenarioReport {
    /// Adds another run's (merge); `Err` names the count whose sum would
    /// overflow.
    pub fn add(&mut self, o: &ScenarioReport) -> Result<(), &'static str> {
        let sum = |a: u64, b: u64, field| a.checked_add(b).ok_or(field);
        self.matched = sum(self.matched, o.matched, "scenario.matched")?;
        self.diverged = sum(self.diverged, o.diverged, "scenario.diverged")?;
        let mut by_step: BTreeMap<usize, Divergence> =
            self.divergences.drain(..).map(|d| (d.step, d)).collect();
        for d in &o.divergences {
            match by_step.get_mut(&d.step) {
                Some(x) => x.clients = sum(x.clients, d.clients, "scenario.divergences.clients")?,
                None => {
                    by_step.insert(d.step, d.clone());
                }
            }
        }
        self.divergences = by_step.into_values().take(MAX_DIVERGENCES).collect();
        Ok(())
    }
}

/// What one replaying client did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub connected: bool,
    pub connect_us: u64,
    pub sent: u64,
    /// Messages received; kept only to compare them with the recording
    /// (`--expect none` counts them, however many the server sends).
    pub received: u64,
    pub kept: Vec<String>,
    pub error: Option<String>,
    /// POSTs answered, and those refused by status (retries included).
    pub posts: u64,
    pub refusals: BTreeMap<u16, u64>,
}

impl Replayed {
    /// Takes the client's counts of POST answers, once it is done.
    fn tally(mut self, client: &ChannelClient) -> Self {
        let s = client.status();
        (self.posts, self.refusals) = (s.posts, s.refusals);
        self
    }
}

/// What every replaying client shares.
struct Replay {
    run_id: String,
    url: String,
    sc: Arc<Scenario>,
    speed: f64,
    expect: Expect,
    drain: Duration,
    connect_timeout: Duration,
    /// Bounds the clients connecting at once.
    gate: Semaphore,
    /// https: `--cacert` and `-k`, as `connect` takes them.
    ca_certs: Vec<reqwest::Certificate>,
    insecure: bool,
    halting: Arc<super::halt::Halting>,
}

/// Replays the scenario as client `index`.
async fn replay(index: usize, p: Arc<Replay>) -> Replayed {
    let Replay {
        ref run_id,
        ref url,
        ref sc,
        speed,
        expect,
        drain,
        connect_timeout,
        ref gate,
        ref ca_certs,
        insecure,
        ref halting,
    } = *p;
    // Ctrl-C ends the replay where it is: what came so far is reported.
    let mut halt = halting.watch(super::halt::Halt::Interrupt);
    let mut out = Replayed::default();
    let mode =
        if sc.raw { Mode::Raw } else { Mode::Channel { client_id: format!("{run_id}-{index}") } };
    let permit = gate.acquire().await;
    let t0 = Instant::now();
    let started = ClientConfig::new(url, mode).and_then(|mut config| {
        config.timeout = connect_timeout;
        config.ca_certs = ca_certs.clone();
        config.insecure = insecure;
        ChannelClient::start(config)
    });
    let (client, mut events) = match started {
        Ok(x) => x,
        Err(e) => {
            out.error = Some(format!("connect: {e}"));
            return out;
        }
    };
    let opened = tokio::time::timeout(connect_timeout, async {
        while let Some(ev) = events.recv().await {
            match ev {
                ClientEvent::Open => return Ok(()),
                ev if ev.is_terminal() => return Err(terminal(&ev)),
                _ => {}
            }
        }
        Err("the client stopped".to_string())
    })
    .await;
    drop(permit);
    match opened {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            out.error = Some(format!("connect: {why}"));
            return out;
        }
        Err(_) => {
            out.error = Some(format!("connect: not open within {connect_timeout:?}"));
            client.stop();
            return out.tally(&client);
        }
    }
    out.connected = true;
    out.connect_us = t0.elapsed().as_micros() as u64;
    let start = Instant::now();
    let client = Arc::new(client);
    let sender = {
        let (client, sc) = (client.clone(), sc.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            for (t, data) in &sc.sends {
                // Within the span, which was checked.
                let at = Duration::try_from_secs_f64(t / 1000.0 / speed).unwrap_or_default();
                tokio::time::sleep_until(start + at).await;
                if let Err(e) = client.send(data).await {
                    return (sent, Some(format!("send: {e}")));
                }
                sent += 1;
            }
            (sent, None)
        })
    };
    // Receive until the recording's end plus --drain, or (comparing) as
    // many messages as were recorded.
    // Checked before the replay started.
    let end = start + sc.span(speed).unwrap_or_default() + drain;
    let enough = |n: usize| expect != Expect::None && n >= sc.expected.len();
    let keep = |out: &mut Replayed, m: String| {
        out.received += 1;
        if expect != Expect::None {
            out.kept.push(m);
        }
    };
    while !enough(out.received as usize) {
        let next = super::halt::unless(&mut halt, events.recv());
        match tokio::time::timeout_at(end, next).await {
            Err(_) | Ok(None) | Ok(Some(None)) => break,
            Ok(Some(Some(ev))) => match ev {
                ClientEvent::Message(m) => keep(&mut out, m),
                ClientEvent::Event(ev) => keep(&mut out, ev.data),
                ClientEvent::SendFailed { message_id, reason } => {
                    out.error.get_or_insert(format!("message {message_id} refused: {reason}"));
                }
                ev if ev.is_terminal() => {
                    out.error.get_or_insert(terminal(&ev));
                    break;
                }
                _ => {}
            },
        }
    }
    if halt.is_done() {
        // Interrupted: the sends still to come are not waited for.
        client.stop();
        return out.tally(&client);
    }
    match tokio::time::timeout_at(end, sender).await {
        Ok(Ok((sent, err))) => {
            out.sent = sent;
            if let Some(e) = err {
                out.error.get_or_insert(e);
            }
        }
        _ => {
            out.error.get_or_insert_with(|| "sending did not finish in time".into());
        }
    }
    // Every POST answered (or the time is up), so that its answer counts.
    let _ = tokio::time::timeout_at(end, client.wait_settled()).await;
    // Tell the server the channel is over (bounded: it may not know how).
    let _ = tokio::time::timeout(connect_timeout, client.close()).await;
    out.tally(&client)
}

fn terminal(ev: &ClientEvent) -> String {
    match ev {
        ClientEvent::ClosedByServer => "closed by the server".into(),
        ClientEvent::NoContent => "the server answered 204".into(),
        ClientEvent::Failed { reason } | ClientEvent::GaveUp { reason, .. } => reason.clone(),
        ClientEvent::Closed => "closed".into(),
        other => format!("{other:?}"),
    }
}

/// Where a client's messages first left the recording (`None`: they did
/// not), under `expect`.
pub fn divergence(
    sc: &Scenario,
    got: &[String],
    expect: Expect,
) -> Option<(usize, Option<String>)> {
    match expect {
        Expect::None => None,
        Expect::Count => {
            (got.len() != sc.expected.len()).then(|| (got.len().min(sc.expected.len()), None))
        }
        Expect::Order => {
            let k = sc.expected.iter().zip(got).take_while(|(e, g)| e.1 == **g).count();
            (k < sc.expected.len() || k < got.len()).then(|| (k, got.get(k).cloned()))
        }
    }
}

/// Counts matching clients and the steps where the others diverged.
pub fn compare(sc: &Scenario, runs: &[Vec<String>], expect: Expect) -> ScenarioReport {
    let mut r = ScenarioReport { expect: Some(expect), ..ScenarioReport::default() };
    let mut by_step: BTreeMap<usize, Divergence> = BTreeMap::new();
    for got in runs {
        match divergence(sc, got, expect) {
            None => r.matched += 1,
            Some((k, instead)) => {
                r.diverged += 1;
                let d = by_step.entry(k).or_insert_with(|| Divergence {
                    step: k + 1,
                    t_ms: sc.expected.get(k).map(|e| e.0),
                    expected: sc.expected.get(k).map(|e| quote(&e.1)),
                    got: instead.as_deref().map(quote),
                    clients: 0,
                });
                d.clients += 1;
            }
        }
    }
    r.divergences = by_step.into_values().take(MAX_DIVERGENCES).collect();
    r
}

fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE {
        return s.to_string();
    }
    let mut q: String = s.chars().take(QUOTE).collect();
    q.push('…');
    q
}

/// The whole replay: every client of this shard, then the comparison.
/// `None` when no client could connect (said on stderr).
pub async fn run(
    args: &crate::cli::BenchArgs,
    path: &Path,
    local: std::ops::Range<usize>,
    start_at: Option<std::time::SystemTime>,
    halting: &Arc<super::halt::Halting>,
) -> anyhow::Result<Option<super::report::Report>> {
    use super::report::{Mode, Report};
    let file = path.display().to_string();
    let sc = Scenario::read(path).map_err(|e| super::usage(format!("--scenario {file}: {e}")))?;
    if sc.span(args.speed).is_none() {
        return Err(super::usage(format!(
            "--scenario {file}: --speed {} stretches the replay past a week (at most {MAX_SPAN_MS} ms)",
            args.speed
        )));
    }
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            // The file chose where to connect: say so before anything is sent.
            let url = crate::text::escape_controls(&sc.url).into_owned();
            crate::client::parse_url(&sc.url)
                .map_err(|e| super::usage(format!("--scenario {file}: url: {e}")))?;
            eprintln!(
                "ssechan: --scenario {file}: replaying against {url}, the recording's URL \
                 (give a URL to use another)"
            );
            sc.url.clone()
        }
    };
    let sc = Arc::new(sc);
    let plan = Arc::new(Replay {
        run_id: format!("replay-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        url: url.clone(),
        sc: sc.clone(),
        speed: args.speed,
        expect: args.expect,
        drain: args.drain,
        connect_timeout: args.connect_timeout,
        gate: Semaphore::new(super::CONNECT_CONCURRENCY),
        ca_certs: match &args.cacert {
            Some(p) => crate::client::load_ca_certs(p).map_err(|e| super::usage(e.to_string()))?,
            None => Vec::new(),
        },
        insecure: args.insecure,
        halting: halting.clone(),
    });
    if let Some(at) = start_at {
        super::wait_for_start(at).await;
    }
    let clock = super::stats::Clock::new();
    let tasks: Vec<_> = local.clone().map(|i| tokio::spawn(replay(i, plan.clone()))).collect();
    let mut r = Report { mode: Mode::Scenario, url: url.clone(), ..Report::default() };
    let mut hists = super::stats::Histograms::default();
    let mut runs = Vec::with_capacity(local.len());
    for t in tasks {
        let c = t.await.unwrap_or_else(|e| Replayed {
            error: Some(format!("replay task failed: {e}")),
            ..Replayed::default()
        });
        r.connected += u64::from(c.connected);
        r.sent += c.sent;
        r.received += c.received;
        r.posts = r.posts.saturating_add(c.posts);
        for (status, n) in c.refusals {
            let total = r.refusals.entry(status).or_default();
            *total = total.saturating_add(n);
        }
        if c.connected {
            hists.connect.record_us(c.connect_us);
        }
        if let Some(e) = c.error {
            r.errors += 1;
            super::push_sample(&mut r.error_samples, e);
        }
        if c.connected {
            runs.push(c.kept);
        }
    }
    if r.connected == 0 {
        let why = r.error_samples.first().cloned().unwrap_or_else(|| "no client connected".into());
        eprintln!("ssechan: cannot reach {url}: {why}");
        return Ok(None);
    }
    r.interrupted = halting.interrupted();
    r.clients = local.len() as u64;
    r.duration_s = clock.now_us() as f64 / 1e6;
    r.started_at = super::rfc3339(clock.wall_at(0));
    let mut cmp = compare(&sc, &runs, args.expect);
    cmp.file = path.display().to_string();
    cmp.speed = args.speed;
    cmp.sends = sc.sends.len() as u64;
    cmp.steps = sc.expected.len() as u64;
    r.scenario = Some(cmp);
    r.set_histograms(hists);
    r.set_rates();
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(expected: &[&str]) -> Scenario {
        Scenario {
            url: String::new(),
            raw: false,
            sends: Vec::new(),
            expected: expected
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64 * 10.0, s.to_string()))
                .collect(),
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn divergence_in_order_and_count() {
        let s = sc(&["a", "b", "c"]);
        assert_eq!(divergence(&s, &v(&["a", "b", "c"]), Expect::Order), None);
        assert_eq!(
            divergence(&s, &v(&["a", "x", "c"]), Expect::Order),
            Some((1, Some("x".into())))
        );
        assert_eq!(divergence(&s, &v(&["a", "b"]), Expect::Order), Some((2, None)));
        assert_eq!(
            divergence(&s, &v(&["a", "b", "c", "d"]), Expect::Order),
            Some((3, Some("d".into())))
        );
        assert_eq!(divergence(&s, &v(&["c", "b", "a"]), Expect::Count), None);
        assert_eq!(divergence(&s, &v(&["a"]), Expect::Count), Some((1, None)));
        assert_eq!(divergence(&s, &v(&[]), Expect::None), None);
    }

    #[test]
    fn steps_where_clients_diverged() {
        let s = sc(&["a", "b", "c"]);
        let runs = [v(&["a", "b", "c"]), v(&["a", "x", "c"]), v(&["a", "y"]), v(&["a", "b"])];
        let r = compare(&s, &runs, Expect::Order);
        assert_eq!((r.matched, r.diverged), (1, 3));
        assert_eq!(r.divergences.len(), 2);
        let d = &r.divergences[0];
        assert_eq!((d.step, d.clients, d.t_ms), (2, 2, Some(10.0)));
        assert_eq!((d.expected.as_deref(), d.got.as_deref()), (Some("b"), Some("x")));
        assert_eq!((r.divergences[1].step, r.divergences[1].got.as_deref()), (3, None));
        let mut merged = r.clone();
        merged.add(&r).unwrap();
        assert_eq!((merged.matched, merged.divergences[0].clients), (2, 4));
    }
}
