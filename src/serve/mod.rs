//! `ssechan serve`: a channel endpoint wired to stdin/stdout, an echo, or a
//! process per client.

mod budget;
mod exec;
pub mod guard;
mod stdio;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use budget::SpawnRate;

use crate::cli::{Format, LineBreakPolicy, ServeArgs};
use crate::server::{
    FD_RESERVE, Limits, LineBreaks, McpConfig, OriginPolicy, Protocol, Server, ServerConfig,
};

/// How long to wait for the last output lines once the server has shut down.
const FLUSH_GRACE: Duration = Duration::from_millis(300);

impl ServeArgs {
    /// The server settings these flags describe; bounds left to default are
    /// derived from `fd_limit`, the open-file limit in force.
    pub fn config(&self, fd_limit: u64) -> ServerConfig {
        let exec = !self.command.is_empty();
        // A line break would split a message in two for a reader of lines.
        let line_breaks = match self.line_breaks {
            Some(LineBreakPolicy::Refuse) => LineBreaks::Refuse,
            Some(LineBreakPolicy::Pass) => LineBreaks::Pass,
            None if exec || (self.format == Format::Text && !self.echo) => LineBreaks::Refuse,
            None => LineBreaks::Pass,
        };
        // A process per client runs what the client sends: only pages of
        // this server may drive it unless told otherwise. MCP requires the
        // Origin checked whatever answers (its servers act for their user).
        let default_origins =
            if exec || self.mcp { OriginPolicy::SameOrigin } else { OriginPolicy::Any };
        let limits = Limits {
            max_message_bytes: self.max_message_size,
            reorder_window: self.reorder_window,
            reorder_bytes: self.reorder_bytes,
            outgoing_messages: self.max_queue,
            outgoing_bytes: self.max_queue_bytes,
            replay_events: self.replay,
            replay_bytes: self.replay_bytes,
            max_clients: self.max_clients.unwrap_or(0),
            max_connections: self.max_connections.unwrap_or(0),
            max_client_id_len: self.max_client_id,
            incoming_messages: self.max_incoming,
            incoming_bytes: self.max_incoming_bytes,
            incoming_total: self.max_incoming_total,
            closed_id_bytes: self.max_closed_ids_bytes,
            accept_queue: self.accept_queue,
        };
        let protocol = match self.mcp {
            false => Protocol::Sse,
            true => Protocol::Mcp(McpConfig {
                session_idle: self.session_idle,
                max_streams: self.max_session_streams.max(1),
                ..McpConfig::default()
            }),
        };
        // An MCP stream cut before its answer is resumed: keep it a while.
        let keep_alive = self.keep_alive.or(self.mcp.then_some(MCP_KEEP_ALIVE));
        ServerConfig {
            static_dir: self.static_dir.clone(),
            devconsole: self.devconsole,
            path: self.path.clone(),
            keep_alive,
            protocol,
            heartbeat: (!self.heartbeat.is_zero()).then_some(self.heartbeat),
            retry: self.retry,
            origins: OriginPolicy::from_list(&self.allow_origins, default_origins),
            allowed_hosts: self.allow_hosts.clone(),
            request_timeout: self.request_timeout,
            write_timeout: self.write_timeout,
            limits: limits.resolve(fd_limit, if exec { FDS_PER_PROCESS } else { 0 }),
            line_breaks,
            ..ServerConfig::default()
        }
    }

    /// `--max-processes`, or what `fd_limit` allows.
    fn max_processes(&self, fd_limit: u64) -> usize {
        let derived = Limits::default().resolve(fd_limit, FDS_PER_PROCESS).max_clients;
        self.max_processes.unwrap_or(derived)
    }

    /// Refuses a COMMAND that anyone on the network could run, with the
    /// one-line way to open it.
    fn check_exposure(&self) -> Result<(), crate::exit::UsageError> {
        if self.command.is_empty()
            || self.listen.ip().is_loopback()
            || self.secret.is_some()
            || self.insecure_no_secret
        {
            return Ok(());
        }
        Err(crate::exit::UsageError(format!(
            "a COMMAND on {} would run for anyone who can reach that address: add --secret to \
             require the secret URL printed at start (or --insecure-no-secret to let anyone run it)",
            self.listen
        )))
    }

    /// One-line warnings about a configuration reachable by more than its
    /// user: every page they visit, or everyone on their network.
    fn warnings(&self, config: &ServerConfig) -> Vec<String> {
        let mut w = Vec::new();
        let any = config.origins.allows_any();
        let exec = !self.command.is_empty();
        let known = if self.secret.is_some() { " that knows the secret URL" } else { "" };
        if exec && any {
            w.push(format!(
                "--allow-origin '*' with a COMMAND: any web page{known} the user visits can run it"
            ));
        }
        if exec && self.allow_hosts.iter().any(|h| h == "*") {
            w.push(format!(
                "--allow-host '*' with a COMMAND: any web page{known} can reach the server under a name of its own (DNS rebinding), start processes and read what they print"
            ));
        }
        if exec && self.insecure_no_secret && !self.listen.ip().is_loopback() {
            w.push(format!(
                "--insecure-no-secret: anyone who can reach {} can run {} with your rights",
                self.listen, self.command[0]
            ));
        }
        if !self.listen.ip().is_loopback() && any && self.secret.is_none() {
            w.push(format!(
                "listening on {} with every origin allowed: any web page and anyone on the network can use the channel (narrow it with --allow-origin, or add --secret)",
                self.listen
            ));
        }
        w
    }
}

/// `--keep-alive` of `--mcp` when not given: how long a cut stream may be
/// resumed.
const MCP_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The secret of `--secret`: the one given, or a random one (122 bits
/// from the system's generator). `Err` when a given one is weak or would
/// need escaping in a URL.
fn secret(given: &str) -> Result<String, crate::exit::UsageError> {
    // `--secret` alone outranks the variable for clap; the variable still
    // names the secret.
    let from_env = std::env::var("SSECHAN_SECRET").ok().filter(|s| !s.is_empty());
    let given = if given.is_empty() { from_env.as_deref().unwrap_or("") } else { given };
    if given.is_empty() {
        return Ok(uuid::Uuid::new_v4().simple().to_string());
    }
    let ok = given.len() >= 16
        && given.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(given.to_owned())
    } else {
        Err(crate::exit::UsageError(
            "--secret (or SSECHAN_SECRET) must be at least 16 characters of A-Z, a-z, 0-9, - and _ (or give --secret alone for a random one)".into(),
        ))
    }
}

/// The shortest `--redis-lease`: it is refreshed every tenth of it.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// Connects to the Redis of `--redis` (waiting up to `--redis-wait`).
async fn connect_redis(args: &ServeArgs, url: &str) -> anyhow::Result<crate::server::Redis> {
    use crate::server::{Redis, RedisError, RedisOptions};
    let options = RedisOptions {
        url: url.to_owned(),
        lease: args.redis_lease,
        prefix: args.redis_prefix.clone(),
    };
    let redis = Redis::connect_waiting(options, args.redis_wait).await.map_err(|e| match e {
        RedisError::BadUrl { .. } => anyhow::Error::from(crate::exit::UsageError(e.to_string())),
        RedisError::Unreachable { .. } if args.redis_wait.is_zero() => {
            anyhow::anyhow!("{e} (is redis-server running? --redis-wait 30s waits for it)")
        }
        RedisError::Unreachable { .. } => {
            anyhow::anyhow!("{e} (waited {})", humantime::format_duration(args.redis_wait))
        }
    })?;
    info!(instance = redis.instance(), "sharing channels through Redis at {}", redis.url());
    Ok(redis)
}

/// Descriptors a process per client holds besides its client's socket:
/// its stdin, stdout and stderr pipes, the guard's status pipe, and the
/// guard's pidfd (tokio waits on it). `tests/exec.rs` measures it.
pub const FDS_PER_PROCESS: usize = 5;

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let usage = |m: String| anyhow::Error::from(crate::exit::UsageError(m));
    if !args.path.starts_with('/') {
        return Err(usage(format!("--path must start with '/', got {:?}", args.path)));
    }
    if args.request_timeout.is_zero() || args.write_timeout.is_zero() {
        return Err(usage("--request-timeout and --write-timeout must be above 0".into()));
    }
    if args.redis_lease < MIN_LEASE {
        return Err(usage(format!(
            "--redis-lease must be at least {}",
            humantime::format_duration(MIN_LEASE)
        )));
    }
    args.check_exposure()?;
    // A COMMAND that cannot run is a usage error, found before listening.
    let exec = match args.command.is_empty() {
        true => None,
        false => Some(
            exec::ExecSpec::new(
                &args.command,
                &args.passenv,
                args.kill_grace,
                args.max_message_size,
            )
            .map_err(crate::exit::UsageError)?,
        ),
    };
    let signalled = shutdown_signal().context("cannot listen for signals")?;
    // A stream and a POST connection per client, a process's descriptors,
    // and some to spare.
    let need = args.max_clients.map_or(0, |n| {
        let processes = args.max_processes.unwrap_or(n);
        n.saturating_mul(2)
            .saturating_add(processes.saturating_mul(FDS_PER_PROCESS))
            .saturating_add(FD_RESERVE)
    });
    let fd_limit = crate::sys::raise_open_file_limit(need as u64);
    let mut config = args.config(fd_limit);
    if let Some(given) = &args.secret {
        config = config.with_secret(&secret(given)?);
    }
    let exec = exec.map(|spec| {
        let rate = args.spawn_rate.limit();
        let budget = budget::Budget::new(args.max_processes(fd_limit), rate, Instant::now());
        let admission = Arc::new(exec::ExecAdmission { spec: Arc::new(spec), budget });
        config.admission = Some(admission.clone());
        admission
    });
    if let Some(dir) = &args.static_dir {
        config.static_dir =
            Some(crate::web::static_files::check_root(dir).map_err(crate::exit::UsageError)?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = crate::server::TlsConfig::from_pem_files(cert, key)
            .map_err(|e| crate::exit::UsageError(e.to_string()))?;
        config.tls = Some(tls);
    }
    if let Some(url) = &args.redis {
        config.redis = Some(connect_redis(&args, url).await?);
    }
    let warnings = args.warnings(&config);
    let server = Server::bind(args.listen, config).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (use --listen 127.0.0.1:0 for a free port)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {}: {e}{hint}", args.listen)
    })?;
    let url = server.url();
    let metrics = match args.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for --metrics: {e}"))?,
        ),
        None => None,
    };
    let urls = reachable_urls(&url, server.local_addr());
    for u in &urls {
        eprintln!("ssechan: listening on {u}");
    }
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            eprintln!("ssechan: metrics on http://{addr}/metrics");
            if !addr.ip().is_loopback() {
                warn!(
                    "--metrics {addr} is a network address: anyone who reaches it reads the server's counts (no client ids, no messages)"
                );
            }
        }
        server.handle().serve_metrics(listener);
    }
    for w in warnings {
        warn!("{w}");
    }
    if let Some(a) = &exec {
        let rate = args.spawn_rate.limit().map_or("no limit".into(), |r| r.to_string());
        info!("processes: at most {}, started at most {rate}", a.budget.max());
    }
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    // MCP sessions on stdin/stdout: JSON lines, which name the session.
    let format = if args.mcp { Format::Json } else { args.format };
    if format == Format::Json && !args.echo {
        let mut event = serde_json::json!({"event": "listening", "url": urls[0]});
        if urls.len() > 1 {
            event["urls"] = serde_json::json!(urls);
        }
        let _ = out_tx.send(event.to_string()).await;
    }
    let stdout_failed = Arc::new(Notify::new());
    let writer = {
        let failed = stdout_failed.clone();
        tokio::spawn(async move {
            let terminal = std::io::stdout().is_terminal();
            let r = stdio::write_stdout(out_rx, terminal).await;
            if r.is_err() {
                failed.notify_one();
            }
            r
        })
    };
    let mode = if args.echo {
        tokio::spawn(stdio::ignore_stdin());
        Mode::Echo
    } else if let Some(admission) = exec {
        Mode::Exec(admission)
    } else {
        let handle = server.handle();
        let max = args.max_message_size;
        tokio::spawn(stdio::read_stdin(handle, format, max));
        Mode::Stdio(format)
    };
    // Processes are told at once when the server stops, and waited for
    // (each bounds its own wait), so that none outlives the server.
    let (stopping, stopping_rx) = watch::channel(false);
    let shutdown = async {
        tokio::select! {
            _ = signalled => info!("shutting down"),
            _ = stdout_failed.notified() => {}
        }
        let _ = stopping.send(true);
    };
    let (mut tasks, mut processes) = (JoinSet::new(), JoinSet::new());
    server
        .run(shutdown, |conn| {
            while tasks.try_join_next().is_some() {}
            while processes.try_join_next().is_some() {}
            match &mode {
                Mode::Echo => drop(tasks.spawn(echo(conn))),
                Mode::Stdio(format) => {
                    drop(tasks.spawn(stdio::forward(conn, *format, out_tx.clone())))
                }
                Mode::Exec(a) => drop(processes.spawn(exec::run(
                    conn,
                    a.spec.clone(),
                    a.budget.clone(),
                    stopping_rx.clone(),
                ))),
            };
        })
        .await;
    // Every connection has had its close event: let them reach stdout.
    drop(out_tx);
    let flushed = async {
        while tasks.join_next().await.is_some() {}
        writer.await
    };
    let result = match tokio::time::timeout(FLUSH_GRACE, flushed).await {
        Ok(Ok(Err(e))) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
        _ => Ok(()),
    };
    while processes.join_next().await.is_some() {}
    result
}

/// The URLs to print for a listener on `addr`, whose server calls itself
/// `url`: that one, unless `addr` is a wildcard (`--listen :8080`), which
/// no client can connect to: then loopback's first (for the tests and
/// scripts that read the first line), one per address of this machine and
/// one by its host name.
fn reachable_urls(url: &str, addr: std::net::SocketAddr) -> Vec<String> {
    if !addr.ip().is_unspecified() {
        return vec![url.to_owned()];
    }
    wildcard_urls(url, addr, &crate::sys::interface_addresses(), crate::sys::host_name())
}

/// [`reachable_urls`] with the machine's addresses and name given.
fn wildcard_urls(
    url: &str,
    addr: std::net::SocketAddr,
    ips: &[std::net::IpAddr],
    host_name: Option<String>,
) -> Vec<String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let at = |host: String| url.replacen(&addr.to_string(), &host, 1);
    let loopback = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let mut urls = vec![at(SocketAddr::new(loopback, addr.port()).to_string())];
    // An IPv4 wildcard takes IPv4 only; an IPv6 one takes both on Linux.
    let served = |ip: &&IpAddr| ip.is_ipv4() || addr.is_ipv6();
    for ip in ips.iter().filter(served) {
        urls.push(at(SocketAddr::new(*ip, addr.port()).to_string()));
    }
    if let Some(name) = host_name {
        urls.push(at(format!("{name}:{}", addr.port())));
    }
    urls
}

#[derive(Clone)]
enum Mode {
    Echo,
    Stdio(Format),
    Exec(Arc<exec::ExecAdmission>),
}

/// Sends every message back to its sender until the connection closes.
pub async fn echo(mut conn: crate::server::Connection) {
    while let Some(m) = conn.recv_message().await {
        if conn.send(&m).is_err() {
            break;
        }
    }
}

/// SIGINT or SIGTERM. Registered before the listening line is printed, so
/// a signal sent as soon as a script sees it is never the default (fatal)
/// action.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::{reachable_urls, wildcard_urls};
    use crate::cli::{Cli, Command, ServeArgs};
    use crate::server::{FD_RESERVE, Limits, LineBreaks, OriginPolicy};

    fn args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from([&["ssechan", "serve"], args].concat()).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("not serve") };
        *serve
    }

    fn config(a: &[&str]) -> crate::server::ServerConfig {
        args(a).config(20_000)
    }

    #[test]
    fn defaults_are_the_protocols() {
        let c = config(&[]);
        assert_eq!(c.limits, Limits::default().resolve(20_000, 0));
        assert_eq!(c.limits.max_clients, 20_000 - FD_RESERVE);
        assert_eq!((c.path.as_str(), c.keep_alive), ("/sse", None));
        assert_eq!(c.heartbeat, Some(Duration::from_secs(15)));
        assert_eq!(c.origins, OriginPolicy::Any);
        assert!(c.allowed_hosts.is_empty());
        assert_eq!(
            (c.request_timeout, c.write_timeout),
            (Duration::from_secs(10), Duration::from_secs(30))
        );
    }

    #[test]
    fn mcp_serves_at_slash_mcp_resumable_and_same_origin_with_a_command() {
        use crate::server::{McpConfig, Protocol};
        let c = config(&["--mcp", "--", "cat"]);
        assert_eq!(c.path, "/mcp");
        assert_eq!(c.keep_alive, Some(Duration::from_secs(30)), "a cut stream may be resumed");
        assert_eq!(c.origins, OriginPolicy::SameOrigin);
        assert_eq!(c.protocol, Protocol::Mcp(McpConfig::default()));
        let c = config(&[
            "--mcp",
            "--path=/x",
            "--keep-alive=5s",
            "--session-idle=1m",
            "--max-session-streams=3",
        ]);
        assert_eq!((c.path.as_str(), c.keep_alive), ("/x", Some(Duration::from_secs(5))));
        let want = McpConfig {
            session_idle: Duration::from_secs(60),
            max_streams: 3,
            ..McpConfig::default()
        };
        assert_eq!(c.protocol, Protocol::Mcp(want));
        assert_eq!(c.origins, OriginPolicy::SameOrigin, "without COMMAND too");
        assert_eq!(config(&[]).protocol, Protocol::Sse);
        let refused =
            |a: &[&str]| Cli::try_parse_from([&["ssechan", "serve"], a].concat()).is_err();
        assert!(refused(&["--mcp", "--echo"]));
        assert!(
            refused(&["--mcp", "--redis", "redis://127.0.0.1/"]),
            "sessions live in one process"
        );
        assert!(refused(&["--session-idle", "1m"]), "needs --mcp");
    }

    #[test]
    fn a_command_gets_same_origin_and_fewer_clients() {
        let c = config(&["--", "cat"]);
        assert_eq!(c.origins, OriginPolicy::SameOrigin);
        // Six descriptors per client: its socket and FDS_PER_PROCESS.
        assert_eq!(c.limits.max_clients, (20_000 - FD_RESERVE) / 6);
        assert_eq!(args(&["--", "cat"]).max_processes(20_000), (20_000 - FD_RESERVE) / 6);
        assert_eq!(args(&["--max-processes", "7", "--", "cat"]).max_processes(20_000), 7);
        let c = config(&["--max-clients", "100", "--", "cat"]);
        assert_eq!(c.limits.max_connections, 20_000 - FD_RESERVE - 500);
        let c = config(&["--allow-origin", "*", "--", "cat"]);
        assert_eq!(c.origins, OriginPolicy::List(vec!["*".into()]));
    }

    #[test]
    fn risky_configurations_are_warned_about() {
        let warnings = |a: &[&str]| {
            let a = args(a);
            a.warnings(&a.config(20_000))
        };
        assert!(warnings(&[]).is_empty());
        assert!(warnings(&["--", "cat"]).is_empty());
        let w = warnings(&["--allow-origin", "*", "--", "cat"]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("any web page"), "{w:?}");
        let w = warnings(&["--allow-host", "*", "--", "cat"]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("any web page can reach") && w[0].contains("DNS rebinding"), "{w:?}");
        let w = warnings(&["--secret", "--allow-host", "*", "--", "cat"]);
        assert!(w[0].contains("any web page that knows the secret URL"), "{w:?}");
        let w = warnings(&["--listen", "0.0.0.0:8080"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(warnings(&["--listen", "0.0.0.0:8080", "--secret"]).is_empty());
        let w = warnings(&["--listen", "0.0.0.0:8080", "--insecure-no-secret", "--", "cat"]);
        assert_eq!(
            w,
            [
                "--insecure-no-secret: anyone who can reach 0.0.0.0:8080 can run cat with your rights"
            ]
        );
        let w = warnings(&[
            "--listen",
            "0.0.0.0:8080",
            "--allow-origin",
            "https://a.test",
            "--allow-host",
            "a.test",
        ]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_command_on_the_network_needs_the_secret_or_the_insecure_flag() {
        let err = args(&["--listen", "0.0.0.0:8080", "--", "cat"]).check_exposure().unwrap_err();
        assert!(err.0.contains("add --secret") && err.0.contains("--insecure-no-secret"), "{err}");
        assert!(!err.0.contains('\n'), "one line: {err}");
        for ok in [
            &["--listen", "0.0.0.0:8080", "--secret", "--", "cat"][..],
            &["--listen", "0.0.0.0:8080", "--insecure-no-secret", "--", "cat"],
            &["--listen", "127.0.0.1:8080", "--", "cat"],
            &["--listen", "[::1]:8080", "--", "cat"],
            &["--listen", "0.0.0.0:8080"],
        ] {
            assert!(args(ok).check_exposure().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn secrets_given_or_drawn() {
        let a = super::secret("").unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, super::secret("").unwrap());
        assert_eq!(super::secret("abcdefghij-_0123").unwrap(), "abcdefghij-_0123");
        for weak in ["short", "has space in it ok", "ümlaut-ümlaut-ümlaut", "a/b/c/d/e/f/g/h/i"]
        {
            assert!(super::secret(weak).is_err(), "{weak}");
        }
        let c = config(&["--path", "/chan"]).with_secret("abcdefghij-_0123");
        assert_eq!(c.path, "/abcdefghij-_0123/chan");
    }

    #[test]
    fn line_breaks_are_refused_where_a_message_is_a_line() {
        let lb = |a: &[&str]| config(a).line_breaks;
        assert_eq!(lb(&[]), LineBreaks::Refuse);
        assert_eq!(lb(&["--", "cat"]), LineBreaks::Refuse);
        assert_eq!(lb(&["--format", "json"]), LineBreaks::Pass);
        assert_eq!(lb(&["--echo"]), LineBreaks::Pass);
        assert_eq!(lb(&["--line-breaks", "pass"]), LineBreaks::Pass);
        assert_eq!(lb(&["--line-breaks", "refuse", "--format", "json"]), LineBreaks::Refuse);
    }

    #[test]
    fn every_limit_flag_reaches_the_server() {
        let c = config(&[
            "--path=/chan",
            "--keep-alive=30s",
            "--heartbeat=0",
            "--retry=250ms",
            "--allow-origin=http://a",
            "--allow-origin=http://b",
            "--allow-host=a.test",
            "--max-message-size=2K",
            "--reorder-window=7",
            "--reorder-bytes=3K",
            "--max-queue=11",
            "--max-queue-bytes=4K",
            "--replay=13",
            "--replay-bytes=5K",
            "--max-clients=17",
            "--max-connections=29",
            "--max-client-id=19",
            "--max-incoming=23",
            "--max-incoming-bytes=6K",
            "--max-incoming-total=7K",
            "--max-closed-ids-bytes=8K",
            "--accept-queue=31",
            "--request-timeout=3s",
            "--write-timeout=4s",
        ]);
        assert_eq!(c.path, "/chan");
        assert_eq!(c.keep_alive, Some(Duration::from_secs(30)));
        assert_eq!(c.heartbeat, None);
        assert_eq!(c.retry, Duration::from_millis(250));
        assert_eq!(c.origins, OriginPolicy::List(vec!["http://a".into(), "http://b".into()]));
        assert_eq!(c.allowed_hosts, vec!["a.test".to_string()]);
        assert_eq!(
            (c.request_timeout, c.write_timeout),
            (Duration::from_secs(3), Duration::from_secs(4))
        );
        assert_eq!(
            c.limits,
            Limits {
                max_message_bytes: 2048,
                reorder_window: 7,
                reorder_bytes: 3072,
                outgoing_messages: 11,
                outgoing_bytes: 4096,
                replay_events: 13,
                replay_bytes: 5120,
                max_clients: 17,
                max_connections: 29,
                max_client_id_len: 19,
                incoming_messages: 23,
                incoming_bytes: 6144,
                incoming_total: 7168,
                closed_id_bytes: 8192,
                accept_queue: 31,
            }
        );
    }

    #[test]
    fn a_wildcard_listener_prints_urls_a_client_can_use() {
        let ips = ["10.1.2.3".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        let host = || Some("devbox".to_owned());
        let v4 = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            wildcard_urls("http://0.0.0.0:8080/sse", v4, &ips, host()),
            ["http://127.0.0.1:8080/sse", "http://10.1.2.3:8080/sse", "http://devbox:8080/sse"]
        );
        let v6 = "[::]:8443".parse().unwrap();
        assert_eq!(
            wildcard_urls("https://[::]:8443/x", v6, &ips, None),
            ["https://[::1]:8443/x", "https://10.1.2.3:8443/x", "https://[2001:db8::7]:8443/x"]
        );
        let one = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(reachable_urls("http://127.0.0.1:8080/sse", one), ["http://127.0.0.1:8080/sse"]);
    }
}
