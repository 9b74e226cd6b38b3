//! Every command-line definition, and nothing else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Serve, probe and benchmark bi-directional SSE channels (Dart package:sse).
#[derive(Debug, Parser)]
#[command(name = "ssechan", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "\
Examples:
  # a channel at http://127.0.0.1:8080/sse with stdin/stdout as its data
  ssechan serve
  # talk to it from a second terminal
  ssechan connect http://127.0.0.1:8080/sse
  # benchmark an embedded echo server
  ssechan bench
  # read any plain SSE endpoint
  ssechan connect --raw https://example.com/events
  # check an endpoint and the proxies in front of it
  ssechan check http://127.0.0.1:8080/sse

Environment:
  RUST_LOG  log filter, overrides -v/-q (e.g. RUST_LOG=ssechan=debug)
  NO_COLOR  when set, no colour on stderr")]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where `-v`/`-q` are listed: after a command's own options, not among them.
const GLOBAL: &str = "Global options";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Host a channel endpoint: pipe stdin/stdout, echo, or run a process per client.
    Serve(Box<ServeArgs>),
    /// Connect to a channel (REPL on a terminal, pipe otherwise) or read plain SSE.
    Connect(ConnectArgs),
    /// Load-test a channel server and verify exactly-once, in-order delivery.
    Bench(BenchArgs),
    /// Run named conformance and proxy checks against a live endpoint, with the fix for each failure.
    Check(CheckArgs),
    /// Write shell completions into ./completions and man pages into ./man
    /// (run from the repository root to refresh the committed copies).
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

/// What `serve` does with a message that holds a line break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LineBreakPolicy {
    /// 400 with the reason.
    Refuse,
    /// Taken as it is (a text-mode reader sees several lines).
    Pass,
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

/// Parses `--listen`: `HOST:PORT` with an IP address or `localhost` (the
/// IPv4 loopback, so the address printed is the one bound), a bare `PORT`
/// (loopback: the safe default), or `:PORT` (every IPv4 interface).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let bad = || "--listen takes HOST:PORT, e.g. 127.0.0.1:8080 (or a bare port: 8080)".to_string();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = |p: &str| {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse::<u16>()
            .map_err(|_| format!("port {p} is out of range (0-65535; 0 picks a free port)"))
    };
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(s)?));
    }
    match s.rsplit_once(':') {
        Some(("", p)) => Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port(p)?)),
        Some((host, p)) if host.eq_ignore_ascii_case("localhost") => {
            Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(p)?))
        }
        Some((host, p)) if host.parse::<IpAddr>().is_ok() => {
            // Not a socket address although the host is an IP: the port is
            // out of range, or an IPv6 address lacks its brackets.
            port(p)?;
            Err(bad())
        }
        _ => Err(bad()),
    }
}

#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Exit status:
  0  stopped by SIGINT or SIGTERM (every client gets a control close first)
  1  cannot listen, Redis unreachable at start, or stdout closed
  2  usage error

Examples:
  # stdin lines to every client, their messages to stdout; clients may resume
  ssechan serve --keep-alive 30s
  # an echo server on a free port (what bench measures)
  ssechan serve --echo --listen 127.0.0.1:0
  # on every interface, port 8080
  ssechan serve --listen :8080
  # JSON events out, JSON commands in
  ssechan serve --format json
  # one process per client (websocketd-style)
  ssechan serve -- ./handler.sh
  # a site and a console page at /sse, over HTTPS with HTTP/2
  ssechan serve --static site --devconsole --tls-cert c.pem --tls-key k.pem
  # one of several instances sharing channels (behind a load balancer)
  ssechan serve --echo --listen :8081 --redis redis://10.0.0.5/0
  # a stdio MCP server on http://127.0.0.1:8080/mcp, a process per session
  ssechan serve --mcp -- npx -y @modelcontextprotocol/server-everything stdio")]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT, a bare PORT (loopback), or :PORT
    /// (every interface); port 0 picks a free port.
    #[arg(long, value_parser = parse_listen, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub listen: SocketAddr,
    /// Path of the channel endpoint (with --mcp: /mcp).
    #[arg(long, default_value = "/sse", default_value_if("mcp", "true", "/mcp"))]
    pub path: String,
    /// Speak MCP's Streamable HTTP instead of package:sse: each session
    /// (initialize) gets its own COMMAND, a stdio MCP server; without
    /// COMMAND sessions are JSON lines on stdin/stdout (docs/mcp.md).
    #[arg(long, conflicts_with_all = ["echo", "devconsole", "redis"])]
    pub mcp: bool,
    /// With --mcp: a session with no request in flight and no stream open
    /// this long ends (its process too).
    #[arg(long, value_parser = parse_duration, default_value = "10m", value_name = "DURATION", requires = "mcp")]
    pub session_idle: Duration,
    /// With --mcp: requests a session may have in flight at once (each
    /// answered as a stream); more get 429.
    #[arg(long, default_value_t = 64, value_name = "N", requires = "mcp")]
    pub max_session_streams: usize,
    /// Keep a connection this long after its stream ends, so a client resumes
    /// transparently (e.g. 30s); off by default (with --mcp: 30s, each stream).
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
    /// Allowed browser origin (repeatable; `*` for any, `null` only if
    /// listed). Default: any origin, but with a COMMAND only the server's
    /// own.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Put everything (channel, --static files, console) below a secret
    /// path, /SECRET/sse: only who is given the URL printed at start can
    /// reach anything. SECRET is random unless given here (visible to
    /// local users in the process list: prefer SSECHAN_SECRET, needed
    /// anyway to give several instances the same one).
    #[arg(long, env = "SSECHAN_SECRET", hide_env_values = true, value_name = "SECRET", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub secret: Option<String>,
    /// Run a COMMAND on a non-loopback address without --secret: anyone who
    /// can reach the address can run it, with your rights.
    #[arg(long, requires = "command", conflicts_with = "secret")]
    pub insecure_no_secret: bool,
    /// Messages with a line break (\n or \r): refused with 400 (the
    /// default in text mode and with a COMMAND, where a message is one
    /// line), or passed on as they are (the default with --format json and
    /// --echo).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub line_breaks: Option<LineBreakPolicy>,
    /// Serve Prometheus metrics at http://ADDR/metrics (same forms as
    /// --listen), on an address of their own.
    #[arg(long, value_parser = parse_listen, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Host name answered besides loopback ones (repeatable; `*` for any).
    /// By default a loopback listener answers only loopback names, another
    /// also IP addresses (against DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
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
    #[arg(long, default_value_t = 16_384, value_name = "EVENTS")]
    pub replay: usize,
    /// Bytes of recent events kept per client for replay (each event counts
    /// 48 bytes more; broadcasts are kept once, for all clients); the
    /// kernel send buffer is an eighth of it.
    #[arg(long, value_parser = parse_size, default_value = "256K", value_name = "BYTES")]
    pub replay_bytes: usize,
    /// Clients at once (suspended ones count); more get 503. Default: what
    /// the open-file limit allows.
    #[arg(long, value_name = "N")]
    pub max_clients: Option<usize>,
    /// With COMMAND: processes at once, those still ending included; a
    /// client whose process cannot start gets 503. Default: what the
    /// open-file limit allows (six descriptors per client).
    #[arg(long, value_name = "N", requires = "command")]
    pub max_processes: Option<usize>,
    /// With COMMAND: processes started at most this fast, as N/s, N/m,
    /// N/h or N/DURATION (N at once, then one every DURATION/N); more get
    /// 503. 0: no limit. EventSource gives up on a 503, so leave room for
    /// every client reconnecting at once after a restart.
    #[arg(long, value_parser = crate::serve::SpawnRate::parse, default_value = "100/s", value_name = "RATE")]
    pub spawn_rate: crate::serve::SpawnRate,
    /// TCP connections at once; more get an immediate 503. Default: the
    /// open-file limit less a reserve.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Longest accepted sseClientId, in bytes.
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    pub max_client_id: usize,
    /// Received messages waiting for stdout (or the process) per client; POSTs wait while full.
    #[arg(long, default_value_t = 4096, value_name = "MESSAGES")]
    pub max_incoming: usize,
    /// Bytes of received messages waiting per client, bodies being read included; likewise.
    #[arg(long, value_parser = parse_size, default_value = "16M", value_name = "BYTES")]
    pub max_incoming_bytes: usize,
    /// Bytes of incoming messages held over all clients; past it POSTs get 503.
    #[arg(long, value_parser = parse_size, default_value = "256M", value_name = "BYTES")]
    pub max_incoming_total: usize,
    /// Bytes remembered of closed client ids (next messageId, acknowledged
    /// out-of-order messages); the oldest are forgotten first.
    #[arg(long, value_parser = parse_size, default_value = "64M", value_name = "BYTES")]
    pub max_closed_ids_bytes: usize,
    /// New connections waiting for the server to take them; more get 503.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub accept_queue: usize,
    /// Time for a request head, a POST body, and a POST waiting for room.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub request_timeout: Duration,
    /// A write to a client that makes no progress this long ends its connection.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub write_timeout: Duration,
    /// Share channels with other `serve` instances through this Redis
    /// (redis://HOST:PORT/DB, or rediss:// for TLS): behind a load balancer,
    /// any instance serves any client's stream and POSTs. A password in the
    /// URL given here is visible to local users in the process list: put
    /// the URL in SSECHAN_REDIS instead.
    #[arg(long, env = "SSECHAN_REDIS", hide_env_values = true, value_name = "URL")]
    pub redis: Option<String>,
    /// Wait up to this long for Redis at start, instead of failing at once.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION", requires = "redis")]
    pub redis_wait: Duration,
    /// An instance silent in Redis this long is dead: the others close the
    /// channels whose application it ran, and resume its streams.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION", requires = "redis")]
    pub redis_lease: Duration,
    /// Prefix of every key in Redis (separate clusters may share one Redis).
    #[arg(long, default_value = "ssechan:", value_name = "PREFIX", requires = "redis")]
    pub redis_prefix: String,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain,
    /// leaf first; needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the files of DIR on every other path (GET/HEAD; index.html for
    /// a directory, no listings, nothing outside DIR).
    #[arg(long = "static", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
    /// A browser opening the channel path gets a console page that connects,
    /// shows every message in and out, and sends what you type.
    #[arg(long)]
    pub devconsole: bool,
    /// With COMMAND: pass this variable of the server's environment on to
    /// the process (repeatable). Otherwise a process gets only PATH and the
    /// CGI-style variables (REMOTE_ADDR, QUERY_STRING, HTTP_ORIGIN…).
    #[arg(long = "passenv", value_name = "NAME", requires = "command")]
    pub passenv: Vec<String>,
    /// With COMMAND: how long a process may run after its client left (its
    /// stdin closed) before SIGTERM, and after SIGTERM before SIGKILL.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub kill_grace: Duration,
    /// Program (and arguments) to run for each client: its stdin gets the
    /// client's messages, one per line; each line it prints is sent to the client.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Exit status:
  0  done, or closed by the server
  1  connection failed or gave up
  2  usage error

Examples:
  # interactive REPL on a terminal
  ssechan connect http://localhost:8080/sse
  # pipe: stdin lines out, messages to stdout
  echo hi | ssechan connect http://localhost:8080/sse
  # read any plain SSE endpoint
  ssechan connect --raw https://example.com/events
  # an MCP server: a REPL (/tools, /call NAME {json}), or JSON-RPC lines in a pipe
  ssechan connect --mcp http://127.0.0.1:8080/mcp")]
pub struct ConnectArgs {
    /// Channel endpoint (or, with --raw, any SSE endpoint; with --mcp, an
    /// MCP endpoint).
    pub url: String,
    /// Speak MCP's Streamable HTTP: initialize (either era), then a REPL
    /// on a terminal, or one JSON-RPC message per stdin and stdout line;
    /// cut streams resume with Last-Event-ID (docs/mcp.md).
    #[arg(long, conflicts_with_all = ["raw", "client_id", "debug_key", "method", "data", "last_event_id", "events", "show_comments"])]
    pub mcp: bool,
    /// With --mcp: the protocol revision to speak (2025-11-25, 2025-06-18,
    /// 2025-03-26 or 2026-07-28); by default the server's era is probed
    /// and the newest revision both speak is used.
    #[arg(long, value_name = "REVISION", requires = "mcp")]
    pub protocol_version: Option<String>,
    /// With --mcp: after stdin ends, how long the answers still owed may
    /// take; past it the run fails, naming them.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION", requires = "mcp")]
    pub answer_timeout: Duration,
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
    /// Exit after receiving this many messages (of the --event types, if given).
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
    /// Follow redirects to other hosts with the -H headers too (by default
    /// they go to the URL's own host only; no Referer is ever sent).
    #[arg(long)]
    pub location_trusted: bool,
    /// Follow a redirect of a POST (a message, or --raw -d) to another
    /// origin, body included; without it that is an error. GETs follow
    /// redirects anywhere, as EventSource does.
    #[arg(short = 'L', long)]
    pub location: bool,
    /// With --raw: the request method (default GET, or POST with --data).
    #[arg(short = 'X', long, value_name = "METHOD", requires = "raw")]
    pub method: Option<String>,
    /// With --raw: the request body, sent again on each reconnect; @FILE
    /// reads a file, @- stdin.
    #[arg(short = 'd', long, value_name = "DATA", requires = "raw")]
    pub data: Option<String>,
    /// Start as if the stream had sent this id: the first GET carries it as
    /// Last-Event-ID.
    #[arg(long, value_name = "ID")]
    pub last_event_id: Option<String>,
    /// Text mode: print comments (e.g. heartbeats) as `:text` lines (JSON
    /// always has them as `comment` events).
    #[arg(long)]
    pub show_comments: bool,
    /// Add the receive time (RFC 3339, UTC) to each output line.
    #[arg(long)]
    pub timestamps: bool,
    /// Print only events of this type (repeatable; channel messages are
    /// `message`).
    #[arg(long = "event", value_name = "TYPE")]
    pub events: Vec<String>,
    /// Write every event, send and state change to FILE as timestamped JSON
    /// lines (the format `bench --scenario` replays).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
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
    disable_help_subcommand = true,
    after_help = "\
Exit status:
  0    every check passed
  1    a check failed (each is named)
  2    usage error, unreachable target, or one that refuses the run
  130  interrupted (Ctrl-C): the report is of the run so far

Examples:
  # embedded echo server, 10 s
  ssechan bench
  ssechan bench http://127.0.0.1:8080/sse --clients 100 --messages 10000
  # gates, and a JUnit report for CI
  ssechan bench URL --rate 5000 --duration 30s --max-p99 5ms --junit bench.xml
  # chaos: resume under load
  ssechan bench URL --drop-every 200ms --duration 60s --rate 2000
  # one of 4 processes, then one report from the shards
  ssechan bench URL --shard 2/4 --start-at +10s --json shard2.json
  ssechan bench merge shard*.json --max-p99 5ms
  # streams answering a POST (LLM-style APIs)
  ssechan bench URL --mode listen --raw --data @body.json --rate 5 -d 60s
  # replay a `connect --record` session with 100 clients
  ssechan bench --scenario session.jsonl -c 100
  # over https, trusting a self-signed certificate
  ssechan bench https://127.0.0.1:8443/sse --cacert cert.pem
  # a page with charts, and a live view while it runs
  ssechan bench URL -d 60s --html report.html --dashboard 8090
  # MCP sessions calling the echo tool, their streams cut every 500 ms
  ssechan bench --mcp http://127.0.0.1:8080/mcp -c 20 -d 10s --drop-every 500ms

The reference: docs/bench.md"
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
    /// URL is an MCP Streamable HTTP endpoint: each client is a session
    /// calling a tool (docs/mcp.md).
    #[arg(long, requires = "url", conflicts_with_all = ["raw", "scenario", "method", "data"])]
    pub mcp: bool,
    /// With --mcp: the tool to call (`echo` by default; its answer is
    /// then checked to be the message sent).
    #[arg(long, value_name = "NAME", requires = "mcp")]
    pub tool: Option<String>,
    /// With --mcp: the tool's arguments, a JSON object (the default echo
    /// sends `{"message": …}` of --size bytes).
    #[arg(long, value_name = "JSON", requires = "mcp")]
    pub args: Option<String>,
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
    /// https: accept any server certificate (like curl -k): encrypted but
    /// not authenticated, for test servers only.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// https: PEM file of certificates (a CA, or a self-signed server's
    /// own) to trust in addition to the built-in roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client threads; 0 uses half the cores, leaving the rest to a local server.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Serve a live view of the run at http://ADDR/ (same forms as serve
    /// --listen: a bare port is on loopback): the HTML report, updated once
    /// a second by an event stream.
    #[arg(long, value_parser = parse_listen, value_name = "ADDR")]
    pub dashboard: Option<SocketAddr>,
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
Exit status:
  0  every check passed
  1  a check failed
  2  a report cannot be read, or the reports do not fit together

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
    /// Fail when more POSTs than this were answered with an error status
    /// (retried or not): a count, or a share of the POSTs (`0.5%`).
    #[arg(long, default_value = "0", value_name = "N|P%")]
    pub max_refusals: crate::bench::report::RefusalLimit,
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
    /// Write the report as one self-contained HTML page to FILE: charts of
    /// the run second by second, the checks, the command line and machine.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
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
#[command(after_help = "\
Exit status:
  0  nothing failed (warnings allowed)
  1  a check failed (each is named, with its fix)
  2  usage error or unreachable target

Examples:
  # every channel and path check
  ssechan check http://127.0.0.1:8080/sse
  # some of them
  ssechan check URL --only 'resume.*' --only path.buffering
  # for CI, without the minute-long idle probe
  ssechan check URL --skip path.idle-timeout --junit check.xml
  # any plain SSE endpoint
  ssechan check --raw https://example.com/events
  # an MCP server's Streamable HTTP endpoint
  ssechan check --mcp http://127.0.0.1:8080/mcp
  # the checks and what each proves
  ssechan check --list")]
pub struct CheckArgs {
    /// Channel endpoint (or, with --raw, any SSE endpoint; with --mcp, an
    /// MCP endpoint).
    #[arg(required_unless_present = "list")]
    pub url: Option<String>,
    /// URL is a plain SSE endpoint: run the raw and path checks, not the channel ones.
    #[arg(long, conflicts_with = "mcp")]
    pub raw: bool,
    /// URL is an MCP Streamable HTTP endpoint: run the MCP checks
    /// (docs/mcp.md).
    #[arg(long)]
    pub mcp: bool,
    /// List the checks (after --raw, --only and --skip) instead of running them.
    #[arg(long)]
    pub list: bool,
    /// Run only the checks matching PATTERN: an id, a group (`resume`) or a
    /// glob (`post.*`); repeatable, or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Leave out the checks matching PATTERN (as for --only).
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Output: a line per check, or a JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write the verdicts as JUnit XML to FILE, for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// How long to wait for each expected echo, event or stream end.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub wait: Duration,
    /// Hold an idle stream open this long to find a proxy that cuts quiet
    /// streams; 0 skips the probe.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub idle_probe: Duration,
    /// Longest wait for a heartbeat comment on an idle channel stream.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub heartbeat_within: Duration,
    /// Time limit for connecting and for each request's answer.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub timeout: Duration,
    /// The foreign origin of the CORS checks.
    #[arg(long, default_value = "https://check.ssechan.invalid", value_name = "ORIGIN")]
    pub origin: String,
    /// Streams opened at once by path.streams (browsers open at most 6 per
    /// origin over HTTP/1.1).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub streams: usize,
    /// The server's message size limit: post.oversize sends one byte more.
    #[arg(long, value_parser = parse_size, default_value = "1M", value_name = "BYTES")]
    pub message_limit: usize,
    /// Extra request header (repeatable), e.g. -H 'Authorization: Bearer x'.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Accept any server certificate (like curl -k).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// PEM file of certificates to trust in addition to the built-in roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// Folder for the shell completions (bash, zsh, fish, PowerShell).
    #[arg(long, default_value = "completions", value_name = "DIR")]
    pub completions: PathBuf,
    /// Folder for the man pages (ssechan.1 and one per command).
    #[arg(long, default_value = "man", value_name = "DIR")]
    pub man: PathBuf,
}

/// Longest `--data` read from a file or stdin.
const MAX_DATA: u64 = 16 << 20;

/// `--data`: the text itself, `@FILE`, or `@-` for stdin (bounded).
pub(crate) fn request_body(data: &str) -> anyhow::Result<bytes::Bytes> {
    use std::io::Read as _;
    let Some(source) = data.strip_prefix('@') else {
        return Ok(bytes::Bytes::copy_from_slice(data.as_bytes()));
    };
    let mut body = Vec::new();
    let read = if source == "-" {
        std::io::stdin().lock().take(MAX_DATA + 1).read_to_end(&mut body)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(MAX_DATA + 1).read_to_end(&mut body))
    };
    let what = if source == "-" { "stdin".to_owned() } else { source.to_owned() };
    read.map_err(|e| crate::exit::UsageError(format!("cannot read --data @{source}: {e}")))?;
    if body.len() as u64 > MAX_DATA {
        return Err(crate::exit::UsageError(format!(
            "--data from {what} is over {MAX_DATA} bytes"
        ))
        .into());
    }
    Ok(body.into())
}

/// `-X`: a method name, any case.
pub(crate) fn http_method(m: &str) -> Result<http::Method, crate::exit::UsageError> {
    http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .map_err(|_| crate::exit::UsageError(format!("-X {m:?} is not an HTTP method")))
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
    fn listen_addresses() {
        let ok = |s: &str| parse_listen(s).map(|a| a.to_string());
        assert_eq!(ok("8080").as_deref(), Ok("127.0.0.1:8080"));
        assert_eq!(ok(":8080").as_deref(), Ok("0.0.0.0:8080"));
        assert_eq!(ok("localhost:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(ok("LocalHost:9").as_deref(), Ok("127.0.0.1:9"));
        assert_eq!(ok("10.1.2.3:80").as_deref(), Ok("10.1.2.3:80"));
        assert_eq!(ok("[::1]:8080").as_deref(), Ok("[::1]:8080"));
        for bad in ["", "nonsense", "host:80", "127.0.0.1", "::1:8080", "localhost", "80a", ":"] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.starts_with("--listen takes HOST:PORT, e.g. 127.0.0.1:8080"), "{bad:?}: {e}");
        }
        for big in ["70000", ":70000", "localhost:70000", "127.0.0.1:70000"] {
            assert!(parse_listen(big).unwrap_err().contains("out of range"), "{big}");
        }
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
