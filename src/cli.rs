//! Every command-line definition, and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Serve, probe and benchmark bi-directional SSE channels (Dart package:sse).
#[derive(Debug, Parser)]
#[command(name = "ssechan", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Host a channel endpoint: pipe stdin/stdout, echo, or run a process per client.
    Serve(ServeArgs),
    /// Connect to a channel (REPL on a terminal, pipe otherwise) or read plain SSE.
    Connect(ConnectArgs),
    /// Load-test a channel server and verify exactly-once, in-order delivery.
    Bench(BenchArgs),
    /// Write shell completions and the man page (used to refresh the committed copies).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Output format of `serve` and `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// One line per message.
    #[default]
    Text,
    /// One JSON object per line, with lifecycle events.
    Json,
}

/// Parses `30s`, `2m`, `250ms` (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))
}

/// Parses a size with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1usize),
        Some((i, _)) => {
            let mul = match t[i..].to_ascii_lowercase().as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?} (use K, M or G)")),
            };
            (&t[..i], mul)
        }
    };
    let n: usize =
        num.parse().map_err(|_| format!("{s:?} is not a size (examples: 512, 64K, 1M)"))?;
    n.checked_mul(mul).ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  ssechan serve --keep-alive 30s               # stdin lines to every client, messages to stdout
  ssechan serve --echo --listen 127.0.0.1:0    # echo server on a free port (what bench measures)
  ssechan serve --format json                  # JSON events out, JSON commands in
  ssechan serve -- ./handler.sh                # one process per client (websocketd-style)")]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Path of the channel endpoint.
    #[arg(long, default_value = "/sse")]
    pub path: String,
    /// Keep a connection this long after its stream ends, so a client resumes
    /// transparently (e.g. 30s); off by default.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keep_alive: Option<Duration>,
    /// Idle time before a `: ping` heartbeat comment; 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = "15s", value_name = "DURATION")]
    pub heartbeat: Duration,
    /// Reconnect delay told to clients with `retry:` at stream start.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub retry: Duration,
    /// Data format on stdin/stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Send every message back to the client that sent it; stdin/stdout carry no data.
    #[arg(long, conflicts_with = "command")]
    pub echo: bool,
    /// Allowed CORS origin (repeatable); every origin is allowed when none is given.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Largest message (POST body); larger ones get 413.
    #[arg(long, value_parser = parse_size, default_value = "1M", value_name = "BYTES")]
    pub max_message_size: usize,
    /// How far ahead of the next expected messageId a POST may be (else 429).
    #[arg(long, default_value_t = 4096, value_name = "MESSAGES")]
    pub reorder_window: u64,
    /// Bytes of out-of-order messages held per client (else 429).
    #[arg(long, value_parser = parse_size, default_value = "16M", value_name = "BYTES")]
    pub reorder_bytes: usize,
    /// Messages queued per client before it is disconnected as a slow consumer.
    #[arg(long, default_value_t = 65_536, value_name = "MESSAGES")]
    pub max_queue: usize,
    /// Bytes queued per client before it is disconnected as a slow consumer.
    #[arg(long, value_parser = parse_size, default_value = "16M", value_name = "BYTES")]
    pub max_queue_bytes: usize,
    /// Recent events kept per client for Last-Event-ID replay.
    #[arg(long, default_value_t = 1024, value_name = "EVENTS")]
    pub replay: usize,
    /// Bytes of recent events kept per client for replay.
    #[arg(long, value_parser = parse_size, default_value = "1M", value_name = "BYTES")]
    pub replay_bytes: usize,
    /// Clients at once (suspended ones count); more get 503.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_clients: usize,
    /// Longest accepted sseClientId, in bytes.
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    pub max_client_id: usize,
    /// Received messages waiting for stdout (or the process) per client; POSTs wait while full.
    #[arg(long, default_value_t = 4096, value_name = "MESSAGES")]
    pub max_incoming: usize,
    /// Program (and arguments) to run for each client: its stdin gets the
    /// client's messages, one per line; each line it prints is sent to the client.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Exit status: 0 done or closed by the server, 1 connection failed or gave up, 2 usage error.

Examples:
  ssechan connect http://localhost:8080/sse                 # interactive REPL
  echo hi | ssechan connect http://localhost:8080/sse       # pipe: stdin lines out, messages to stdout
  ssechan connect --raw https://example.com/events          # read any plain SSE endpoint")]
pub struct ConnectArgs {
    /// Channel endpoint (or, with --raw, any SSE endpoint).
    pub url: String,
    /// Client id to use instead of a random UUID.
    #[arg(long, conflicts_with = "debug_key")]
    pub client_id: Option<String>,
    /// Use the client id KEY-<uuid>, as package:sse's debugKey does.
    #[arg(long, value_name = "KEY")]
    pub debug_key: Option<String>,
    /// Extra request header (repeatable), e.g. -H 'Authorization: Bearer x'.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Output format in pipe mode.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Send this message first (repeatable).
    #[arg(long = "send", value_name = "TEXT")]
    pub send: Vec<String>,
    /// Exit after receiving this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// After stdin ends and every message is acknowledged, keep receiving this long.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub wait: Duration,
    /// Read URL as a plain SSE endpoint: no client id, no POSTs.
    #[arg(long)]
    pub raw: bool,
    /// First reconnect delay; doubles per failure up to --retry-max.
    #[arg(long, value_parser = parse_duration, default_value = "250ms", value_name = "DURATION")]
    pub retry_initial: Duration,
    /// Longest reconnect delay.
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub retry_max: Duration,
    /// Reconnect attempts in a row that may fail before giving up (0: never
    /// reconnect); a stream that ends within 1 s without an event counts as failed.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_retries: u32,
    /// Retry the first connection too (by default a refused port, an unknown
    /// host or a timeout on the first connection fails at once).
    #[arg(long)]
    pub retry_first: bool,
    /// POSTs in flight at once (the server re-orders them).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub in_flight: usize,
    /// Time limit for connecting and for each POST.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub timeout: Duration,
    /// Treat the stream as lost (and resume it) after this long without any
    /// bytes, heartbeats included, e.g. 45s against `ssechan serve` (15 s
    /// heartbeats); off by default and with 0 (TCP keepalive still ends dead
    /// connections in about a minute).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Accept any server certificate (like curl -k): encrypted but not
    /// authenticated, for test servers only.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// PEM file of certificates (a CA, or a self-signed server's own) to
    /// trust in addition to the built-in roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

/// What `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BenchMode {
    /// Send messages and verify every echo.
    #[default]
    Echo,
    /// Only read streams; count events, rate and id gaps.
    Listen,
}

#[derive(Debug, Args, Clone)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Exit status: 0 every check passed, 1 a check failed (each named), 2 usage error or unreachable target.

Examples:
  ssechan bench                                          # embedded echo server, 10 s
  ssechan bench http://127.0.0.1:8080/sse --clients 100 --messages 10000
  ssechan bench URL --rate 5000 --duration 30s --max-p99 5ms --junit bench.xml
  ssechan bench URL --drop-every 200ms --duration 60s --rate 2000   # chaos: resume under load
  ssechan bench URL --shard 2/4 --start-at +10s --json shard2.json  # one of 4 processes
  ssechan bench merge shard*.json --max-p99 5ms          # one report from the shards"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<Box<BenchCommand>>,
    /// Channel endpoint of a server that echoes (e.g. `ssechan serve --echo`);
    /// without it an embedded echo server with keep-alive is started.
    pub url: Option<String>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = BenchMode::Echo)]
    pub mode: BenchMode,
    /// Concurrent clients (of all shards together).
    #[arg(short, long, default_value_t = 50, value_name = "N")]
    pub clients: usize,
    /// Messages per client (listen mode: events per stream, default 1000);
    /// without it and without --duration, echo mode runs for 10s.
    #[arg(short, long, value_name = "N")]
    pub messages: Option<u64>,
    /// Run for this long instead of a message count.
    #[arg(short, long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Open loop: this many messages (listen with -X/--data: new streams)
    /// per second in total (default: closed loop).
    #[arg(short, long, value_name = "N")]
    pub rate: Option<f64>,
    /// Messages each client keeps in flight in closed loop.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub window: usize,
    /// Payload size in bytes (at least the verification header).
    #[arg(short, long, value_parser = parse_size, default_value = "64", value_name = "BYTES")]
    pub size: usize,
    /// Chaos: end each client's stream at random moments around this period; clients resume.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub drop_every: Option<Duration>,
    /// Listen mode: URL is a plain SSE endpoint (no client id).
    #[arg(long)]
    pub raw: bool,
    /// Listen --raw: each stream is the answer to a request of this method
    /// (e.g. POST, as LLM-style APIs stream); a stream that ends is a
    /// completed request.
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,
    /// Listen --raw: the request body (POST unless -X says otherwise),
    /// `@FILE` to read it from a file, `@-` from stdin; sent as JSON unless
    /// -H gives a Content-Type.
    #[arg(long, value_name = "DATA")]
    pub data: Option<String>,
    /// Replay a recorded session (`connect --record FILE`) with each client;
    /// URL defaults to the recorded one.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// --scenario: play the recorded gaps this many times faster.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub speed: f64,
    /// --scenario: what must match the recording: the messages in order (a
    /// deterministic server), their count, or nothing.
    #[arg(long, value_enum, default_value_t = crate::bench::scenario::Expect::Order)]
    pub expect: crate::bench::scenario::Expect,
    /// Listen with -X/--data, without --duration: requests per client.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub streams: u64,
    /// Extra request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    #[command(flatten)]
    pub gates: GateArgs,
    #[command(flatten)]
    pub output: ReportArgs,
    /// Run the I-th of N equal slices of the workload (1-based: clients and
    /// rate divided, client ids disjoint); `N` alone takes I from
    /// JOB_COMPLETION_INDEX (0-based, as a Kubernetes Indexed Job sets it).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Start the load at this time (RFC 3339, e.g. 2026-12-02T10:00:00Z) or
    /// this long after start (+5s), so that shards started apart run together.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Time limit for connecting each client and for each POST's answer (at least 10ms).
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Client threads; 0 uses half the cores, leaving the rest to a local server.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Keep-alive of the embedded server (without URL).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub keep_alive: Duration,
    /// How long to wait for an echo (closed loop: before giving a message up;
    /// at the end: before counting it lost; at start: before saying the
    /// server does not echo) and, in listen mode without --duration, for a
    /// stream's next event (at least 10ms).
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub drain: Duration,
}

/// `bench` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum BenchCommand {
    /// Merge the JSON reports of sharded runs into one (counts summed,
    /// percentiles from the merged histograms) and apply the gates given here.
    #[command(after_help = "\
Exit status: 0 every check passed, 1 a check failed, 2 a report cannot be read or the reports do not fit together.

Examples:
  ssechan bench merge shard1.json shard2.json shard3.json shard4.json --max-p99 5ms
  cat shard*.json | ssechan bench merge - --junit bench.xml")]
    Merge(MergeArgs),
}

/// The pass/fail limits of `bench` and `bench merge`.
#[derive(Debug, Args, Clone)]
pub struct GateArgs {
    /// Fail when more messages than this are lost.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_lost: u64,
    /// Fail when more messages than this are duplicated.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_duplicated: u64,
    /// Fail when the p99 round trip (listen: time to first event) is slower than this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_p99: Option<Duration>,
    /// Fail below this many verified round trips (or, listen mode, events) per second.
    #[arg(long, value_name = "N")]
    pub min_throughput: Option<f64>,
    /// Listen mode: fail below this many events in total [default: 1].
    #[arg(long, value_name = "N")]
    pub min_events: Option<u64>,
}

/// Where `bench` and `bench merge` write their report.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// Write the report as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the checks as JUnit XML to FILE (`-` for stdout), for CI test reports.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct MergeArgs {
    /// JSON reports of `bench --json`; `-` reads reports from stdin (one
    /// after another, as lines or pretty-printed).
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    #[command(flatten)]
    pub gates: GateArgs,
    #[command(flatten)]
    pub output: ReportArgs,
}

#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// Folder for shell completions.
    #[arg(long, default_value = "completions")]
    pub completions: PathBuf,
    /// Folder for the man page.
    #[arg(long, default_value = "man")]
    pub man: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
    }
}
