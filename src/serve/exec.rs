//! One process per client, websocketd-style: the client's messages go to
//! the process's stdin one per line; each line it prints goes to the
//! client; what it writes on stderr goes to the server's stderr, prefixed
//! with the client id.
//!
//! Each process runs under a guard (see [`super::guard`]) in its own
//! process group: when the client leaves, its stdin closes; after
//! `--kill-grace` the group gets SIGTERM, and after another SIGKILL. When
//! the server stops, SIGTERM goes out at once. Nothing it started outlives
//! its client or the server, not even when the server is killed.
//!
//! The environment is CGI-like and nothing else of the server's leaks in:
//! `PATH`, the variables named by `--passenv`, and the request's facts.
//!
//! A process is started before its client's stream is answered (see
//! [`ExecAdmission`]), within the process cap and start rate of a
//! [`Budget`]: a client whose process cannot start gets 503 and the reason,
//! never a 200 stream with nothing behind it.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::budget::{Budget, Reservation};
use super::guard::{GUARD_ARG, STATUS_FD};
use crate::lines::{Line, read_line};
use crate::server::{
    Admission, Admitted, Connection, ConnectionEvent, ConnectionHandle, RequestInfo,
};
use crate::text::escape_controls;

/// Longest stderr line passed on whole; longer ones are summarised.
const MAX_STDERR_LINE: usize = 64 * 1024;
/// How long the guard has to say that the process started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What every process of this server is started from, checked once
/// before the server listens.
#[derive(Debug)]
pub struct ExecSpec {
    /// The program as found on `PATH` (or as given, with a `/`).
    program: PathBuf,
    /// The program as the user wrote it: its `argv[0]`.
    argv0: OsString,
    args: Vec<OsString>,
    /// `PATH` and the `--passenv` variables, as they were at start.
    inherited: Vec<(OsString, OsString)>,
    kill_grace: Duration,
    max_line: usize,
}

impl ExecSpec {
    /// Finds the program; `Err` says why it cannot be run.
    pub fn new(
        command: &[String],
        passenv: &[String],
        kill_grace: Duration,
        max_line: usize,
    ) -> Result<ExecSpec, String> {
        let (program, args) = command.split_first().ok_or("no COMMAND given")?;
        let path_var = std::env::var_os("PATH");
        let resolved = resolve_program(program, path_var.as_deref())?;
        let mut inherited = Vec::new();
        for name in std::iter::once("PATH").chain(passenv.iter().map(String::as_str)) {
            if name.is_empty() || name.contains('=') {
                return Err(format!("--passenv {name:?} is not a variable name"));
            }
            if let Some(v) = std::env::var_os(name) {
                inherited.push((name.into(), v));
            }
        }
        Ok(ExecSpec {
            program: resolved,
            argv0: program.into(),
            args: args.iter().map(OsString::from).collect(),
            inherited,
            kill_grace,
            max_line,
        })
    }

    /// The process's whole environment for one client.
    fn environment(&self, client_id: &str, req: &RequestInfo) -> Vec<(OsString, OsString)> {
        let mut env = self.inherited.clone();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set("SSECHAN_CLIENT_ID", client_id.to_owned());
        set("SSECHAN_REMOTE_ADDR", req.remote.to_string());
        set("REMOTE_ADDR", req.remote.ip().to_string());
        set("REMOTE_PORT", req.remote.port().to_string());
        let name = req.host.as_deref().map(crate::server::policy::host_name).unwrap_or_default();
        let name = if name.is_empty() { req.local.ip().to_string() } else { name.to_owned() };
        set("SERVER_NAME", name);
        set("SERVER_PORT", req.local.port().to_string());
        set("REQUEST_PATH", req.path.clone());
        set("QUERY_STRING", req.query.clone().unwrap_or_default());
        if let Some(o) = &req.origin {
            set("HTTP_ORIGIN", o.clone());
        }
        if let Some(ua) = &req.user_agent {
            set("HTTP_USER_AGENT", ua.clone());
        }
        env
    }
}

/// Finds `program` as `execvp` would: as a path when it has a `/`, else in
/// each directory of `path`. `Err` says why it cannot run.
pub(crate) fn resolve_program(
    program: &str,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("is a directory".into());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("not executable (chmod +x?)".into());
        }
        Ok(())
    };
    if program.is_empty() {
        return Err("COMMAND is empty".into());
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).map(|()| p).map_err(|e| format!("cannot run {program:?}: {e}"));
    }
    let dirs = path.map(std::env::split_paths).into_iter().flatten();
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let p = dir.join(program);
        if runnable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!("cannot run {program:?}: not found in PATH"))
}

/// A running guard and the process it started.
struct Proc {
    guard: Child,
    /// COMMAND's pid, which is also its process group.
    pid: i32,
}

/// The guard's status pipe, once it said the process runs.
type Status = BufReader<pipe::Receiver>;

/// A process started for a client, with its place under the cap.
struct Started {
    proc: Proc,
    status: Status,
    io: Stdio3,
    /// Dropped once the process and its guard are reaped.
    place: Reservation,
}

/// What [`ExecAdmission`] hands to the client's connection. Dropped
/// unused (another request opened the channel, or the server refused it),
/// it ends the process on the usual schedule and frees its place after.
struct Unclaimed {
    started: Option<Started>,
    id: String,
    grace: Duration,
}

impl Unclaimed {
    fn claim(mut self) -> Option<Started> {
        self.started.take()
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        let Some(started) = self.started.take() else { return };
        debug!(client = %escape_controls(&self.id), pid = started.proc.pid, "process not used: ending it");
        started.proc.signal_guard(libc::SIGTERM);
        let (id, grace) = (std::mem::take(&mut self.id), self.grace);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(async move {
                let Started { proc, place, .. } = started;
                proc.finish(grace, &id).await;
                drop(place);
            })),
            // No runtime left to wait in: kill the group and the guard
            // (SAFETY: kill(2) on the group the guard created and on the
            // guard, our child, not yet reaped).
            Err(_) => unsafe {
                libc::kill(-started.proc.pid, libc::SIGKILL);
                if let Some(guard) = started.proc.guard.id() {
                    libc::kill(guard as i32, libc::SIGKILL);
                }
            },
        }
    }
}

/// Starts each new client's process before its stream is answered, within
/// the [`Budget`]; see the module docs.
#[derive(Debug)]
pub(super) struct ExecAdmission {
    pub(super) spec: Arc<ExecSpec>,
    pub(super) budget: Arc<Budget>,
}

impl Admission for ExecAdmission {
    fn admit<'a>(
        &'a self,
        client_id: &'a str,
        request: &'a RequestInfo,
    ) -> Pin<Box<dyn Future<Output = Result<Admitted, String>> + Send + 'a>> {
        Box::pin(async move {
            let started = start(&self.spec, &self.budget, client_id, request).await?;
            let grace = self.spec.kill_grace;
            let unclaimed = Unclaimed { started: Some(started), id: client_id.to_owned(), grace };
            Ok(Box::new(unclaimed) as Admitted)
        })
    }
}

/// Reserves a place, then starts the process; `Err` says why not.
async fn start(
    spec: &ExecSpec,
    budget: &Arc<Budget>,
    client_id: &str,
    request: &RequestInfo,
) -> Result<Started, String> {
    let place = budget.reserve(std::time::Instant::now()).map_err(|e| e.to_string())?;
    let (proc, status, io) = Proc::spawn(spec, client_id, request).await?;
    Ok(Started { proc, status, io, place })
}

impl Proc {
    async fn spawn(
        spec: &ExecSpec,
        client_id: &str,
        request: &RequestInfo,
    ) -> Result<(Proc, Status, Stdio3), String> {
        let (status_tx, status_rx) = pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
        let status_fd = status_tx.into_blocking_fd().map_err(|e| format!("pipe: {e}"))?;
        let raw = status_fd.as_raw_fd();
        let server_pid = std::process::id() as i32;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("ssechan")
            .arg(GUARD_ARG)
            .arg(spec.kill_grace.as_millis().to_string())
            .arg(&spec.program)
            .arg(&spec.argv0)
            .args(&spec.args)
            .env_clear()
            .envs(spec.environment(client_id, request))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (prctl, getppid, dup2,
        // fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The guard learns of the server's death, even by SIGKILL.
                // (The signal comes when the spawning thread ends: tokio's
                // workers live as long as the runtime, i.e. the server.)
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                if libc::getppid() != server_pid {
                    return Err(std::io::Error::other("the server is gone"));
                }
                let ok = if raw == STATUS_FD {
                    libc::fcntl(raw, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, STATUS_FD)
                };
                if ok < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut guard = cmd.spawn().map_err(|e| format!("cannot start the process: {e}"))?;
        drop(status_fd);
        let io = Stdio3 {
            stdin: guard.stdin.take(),
            stdout: guard.stdout.take(),
            stderr: guard.stderr.take(),
        };
        let mut status = BufReader::new(status_rx);
        let mut line = String::new();
        let first = tokio::time::timeout(START_TIMEOUT, status.read_line(&mut line)).await;
        let line = line.trim_end();
        let pid = match (first, line.split_once(' ')) {
            (Ok(Ok(_)), Some(("pid", pid))) => pid.parse().ok(),
            _ => None,
        };
        let Some(pid) = pid else {
            let _ = guard.start_kill();
            let _ = guard.wait().await;
            return Err(line.strip_prefix("error ").unwrap_or("the process did not start").into());
        };
        Ok((Proc { guard, pid }, status, io))
    }

    /// Resolves when COMMAND has exited, with how.
    async fn exited(status: &mut Status) -> String {
        let mut line = String::new();
        match status.read_line(&mut line).await {
            Ok(n) if n > 0 => line.trim_end().strip_prefix("exit ").unwrap_or(&line).to_owned(),
            _ => "killed".into(),
        }
    }

    fn signal_guard(&self, sig: i32) {
        if let Some(pid) = self.guard.id() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// Waits for the guard to finish its schedule; past it (the guard
    /// itself stuck), kills the guard and the group.
    async fn finish(mut self, grace: Duration, id: &str) {
        let bound = grace * 2 + Duration::from_secs(3);
        if tokio::time::timeout(bound, self.guard.wait()).await.is_err() {
            warn!(client = %id, "process guard did not finish in {bound:?}; killing it");
            // SAFETY: kill(2) on the group the guard created.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = self.guard.kill().await;
        }
    }
}

struct Stdio3 {
    stdin: Option<ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
}

/// How the conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client is gone: close stdin, then the grace.
    ClientGone,
    /// The process exited (its client is control-closed).
    Exited,
    /// The server is stopping: SIGTERM at once.
    Shutdown,
}

pub(super) async fn run(
    mut conn: Connection,
    spec: Arc<ExecSpec>,
    budget: Arc<Budget>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = escape_controls(conn.id()).into_owned();
    let handle = conn.handle();
    let admitted = conn.take_admitted().and_then(|a| a.downcast::<Unclaimed>().ok());
    let started = match admitted.and_then(|a| a.claim()) {
        Some(s) => s,
        // The channel was opened by a request that found it still open
        // (it closed meanwhile): start one now, or close at once.
        None => match start(&spec, &budget, conn.id(), conn.request()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(client = %id, "{e}; closing the client");
                conn.close();
                return;
            }
        },
    };
    let Started { proc, mut status, io, place } = started;
    info!(client = %id, pid = proc.pid, running = budget.alive(), "process started");
    let mut stdout_done = match io.stdout {
        Some(out) => tokio::spawn(stdout_to_client(out, handle.clone(), spec.max_line)),
        None => tokio::spawn(async {}),
    };
    if let Some(err) = io.stderr {
        tokio::spawn(stderr_to_log(err, id.clone()));
    }
    let mut stdin = io.stdin;
    let mut lost = 0u64;
    let exited = Proc::exited(&mut status);
    tokio::pin!(exited);
    let stopping = shutdown.wait_for(|s| *s);
    tokio::pin!(stopping);
    let client_gone = handle.closed();
    tokio::pin!(client_gone);
    let end = 'conversation: loop {
        let ev = tokio::select! {
            biased;
            _ = &mut stopping => break End::Shutdown,
            how = &mut exited => {
                info!(client = %id, "process exited ({how})");
                break End::Exited;
            }
            ev = conn.recv() => ev,
        };
        let m = match ev {
            Some(ConnectionEvent::Message(m)) => m,
            Some(ConnectionEvent::Closed(_)) | None => break End::ClientGone,
            Some(_) => continue,
        };
        let Some(w) = stdin.as_mut() else {
            lost += 1;
            continue;
        };
        let mut line = m.into_bytes();
        line.push(b'\n');
        // A process that does not read must not keep us from noticing
        // that its client left or that it exited.
        tokio::select! {
            biased;
            r = w.write_all(&line) => if r.is_err() {
                warn!(client = %id, "the process closed its stdin; the client's next messages are dropped");
                stdin = None;
                lost += 1;
            },
            _ = &mut stopping => { lost += 1; break 'conversation End::Shutdown }
            _ = &mut client_gone => { lost += 1; break 'conversation End::ClientGone }
            how = &mut exited => {
                info!(client = %id, "process exited ({how})");
                lost += 1;
                break 'conversation End::Exited;
            }
        }
    };
    drop(stdin);
    match end {
        End::Exited => {
            // Its last lines first, then the control close; a process left
            // behind holding stdout gets the grace, no more.
            let _ = tokio::time::timeout(spec.kill_grace, &mut stdout_done).await;
            handle.close();
            proc.signal_guard(libc::SIGUSR1);
        }
        End::ClientGone => proc.signal_guard(libc::SIGUSR1),
        End::Shutdown => proc.signal_guard(libc::SIGTERM),
    }
    lost += count_remaining(&mut conn, &handle).await;
    if lost > 0 {
        warn!(client = %id, "{lost} message(s) from the client never reached the process");
    }
    proc.finish(spec.kill_grace, &id).await;
    drop(place);
    debug!(client = %id, "process and its group are gone");
}

/// Closes the connection and counts the messages still queued for the
/// process, which will not read them now (bounded wait for the close).
async fn count_remaining(conn: &mut Connection, handle: &ConnectionHandle) -> u64 {
    handle.close();
    let mut n = 0;
    let drain = async {
        while let Some(ev) = conn.recv().await {
            if matches!(ev, ConnectionEvent::Message(_)) {
                n += 1;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
    n
}

/// Sends each line the process prints to the client; at EOF (the process
/// and whatever it left behind closed stdout) the conversation is over.
async fn stdout_to_client(out: impl AsyncRead + Unpin, handle: ConnectionHandle, max_line: usize) {
    let mut r = BufReader::new(out);
    let mut buf = Vec::new();
    while let Ok(Some(line)) = read_line(&mut r, &mut buf, max_line).await {
        match line {
            Line::Text(t) => {
                if handle.send(&t).is_err() {
                    break;
                }
            }
            Line::TooLong(n) => {
                warn!(client = %handle.id(), "process printed a {n}-byte line, over the message limit; not sent")
            }
        }
    }
    handle.close();
}

/// Copies the process's stderr to ours, a line at a time, each prefixed
/// with `[client id]`, its control characters escaped (it may repeat what
/// a client sent, and reaches the operator's terminal).
async fn stderr_to_log(err: impl AsyncRead + Unpin, prefix: String) {
    let mut r = BufReader::new(err);
    let mut buf = Vec::new();
    let mut out = tokio::io::stderr();
    while let Ok(Some(line)) = read_line(&mut r, &mut buf, MAX_STDERR_LINE).await {
        let text = match line {
            Line::Text(t) => t,
            Line::TooLong(n) => format!("(a {n}-byte line, not shown)"),
        };
        let bytes = format!("[{prefix}] {}\n", escape_controls(&text)).into_bytes();
        if out.write_all(&bytes).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExecSpec {
        ExecSpec {
            program: "/bin/sh".into(),
            argv0: "sh".into(),
            args: vec![],
            inherited: vec![("PATH".into(), "/usr/bin:/bin".into())],
            kill_grace: Duration::from_secs(2),
            max_line: 1024,
        }
    }

    fn request(host: Option<&str>) -> RequestInfo {
        RequestInfo {
            remote: "10.1.2.3:45678".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            host: host.map(Into::into),
            path: "/sse".into(),
            query: Some("sseClientId=abc&x=1".into()),
            origin: Some("http://app.test".into()),
            user_agent: None,
            admitted: Default::default(),
        }
    }

    #[test]
    fn the_environment_is_cgi_like_and_nothing_more() {
        let env = spec().environment("abc", &request(Some("example.test:9000")));
        let got: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let want = [
            ("PATH", "/usr/bin:/bin"),
            ("SSECHAN_CLIENT_ID", "abc"),
            ("SSECHAN_REMOTE_ADDR", "10.1.2.3:45678"),
            ("REMOTE_ADDR", "10.1.2.3"),
            ("REMOTE_PORT", "45678"),
            ("SERVER_NAME", "example.test"),
            ("SERVER_PORT", "8080"),
            ("REQUEST_PATH", "/sse"),
            ("QUERY_STRING", "sseClientId=abc&x=1"),
            ("HTTP_ORIGIN", "http://app.test"),
        ];
        let want: Vec<(String, String)> =
            want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn server_name_without_port_or_brackets_else_the_listen_address() {
        assert_eq!(crate::server::policy::host_name("example.test:9000"), "example.test");
        assert_eq!(crate::server::policy::host_name("example.test"), "example.test");
        assert_eq!(crate::server::policy::host_name("[::1]:8080"), "::1");
        let name = |h| {
            spec()
                .environment("a", &request(h))
                .into_iter()
                .find(|(k, _)| k == "SERVER_NAME")
                .map(|(_, v)| v)
        };
        assert_eq!(name(None), Some("127.0.0.1".into()));
        assert_eq!(name(Some("")), Some("127.0.0.1".into()));
    }

    #[test]
    fn programs_are_found_as_execvp_would() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("handler");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(resolve_program("handler", Some(&path)), Ok(exe.clone()));
        assert_eq!(resolve_program(exe.to_str().unwrap(), None), Ok(exe.clone()));
        let err = |p: &str| resolve_program(p, Some(&path)).unwrap_err();
        assert!(err("nothing-here").ends_with("not found in PATH"), "{}", err("nothing-here"));
        assert!(err("plain").ends_with("not found in PATH"));
        assert!(err(plain.to_str().unwrap()).contains("not executable"));
        assert!(err(dir.path().to_str().unwrap()).contains("is a directory"));
        assert!(err("/nonexistent/prog").contains("No such file"));
        assert!(err("").contains("empty"));
    }
}
