//! The guard of one client's process (`serve -- COMMAND`).
//!
//! `serve` does not start COMMAND itself: it re-executes its own binary as
//! this guard, which starts COMMAND in a new process group and stays its
//! parent. The guard exists so that nothing COMMAND starts outlives the
//! client or the server, even when the server is killed with SIGKILL and
//! can do nothing: the kernel sends the guard a parent-death signal, and
//! the guard ends the group. It is also a child subreaper, so it reaps
//! every process of the group (no zombies, whatever PID 1 does).
//!
//! Protocol with the server: stdin/stdout/stderr are handed to COMMAND
//! as they are; fd 3 is a pipe on which the guard writes `pid N` once
//! COMMAND runs (or `error …` if it cannot start) and `exit …` when it
//! exits; signals from the server: SIGUSR1 "the client left, stdin is
//! closed" (wait the grace, then SIGTERM, wait the grace, then SIGKILL),
//! SIGTERM/SIGINT/SIGHUP "stop now" (SIGTERM at once, then SIGKILL after the
//! grace; the server's death arrives as SIGTERM). The guard exits once
//! COMMAND and everything left in its group are gone.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// `argv[1]` of a guard: `ssechan GUARD_ARG GRACE_MS PROGRAM ARGV0 ARGS…`.
pub(crate) const GUARD_ARG: &str = "__ssechan-exec-guard";
/// The status pipe's descriptor in the guard.
pub(crate) const STATUS_FD: i32 = 3;
/// How long the guard keeps sweeping after SIGKILL before it gives up on
/// processes that do not die (uninterruptible sleep).
const KILL_SWEEP: Duration = Duration::from_secs(2);

/// Runs the guard when this process was started as one; call first thing
/// in `main`, before any thread exists.
pub fn main_if_guard() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != OsStr::new(GUARD_ARG) {
        return None;
    }
    let args: Vec<OsString> = args.collect();
    Some(run(&args))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Running,
    /// Stdin is closed; SIGTERM at the deadline.
    Eof(Instant),
    /// SIGTERM sent; SIGKILL at the deadline.
    Term(Instant),
    /// SIGKILL sent; give up at the deadline.
    Kill(Instant),
}

fn run(args: &[OsString]) -> ExitCode {
    // SAFETY: fd 3, when open, is the status pipe the server set up with
    // dup2, and nothing else in this process uses it.
    let mut status = (unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } >= 0)
        .then(|| unsafe { File::from_raw_fd(STATUS_FD) });
    let [grace, program, argv0, rest @ ..] = args else {
        report(&mut status, "error bad guard arguments");
        return ExitCode::from(2);
    };
    let grace = Duration::from_millis(grace.to_str().and_then(|g| g.parse().ok()).unwrap_or(2000));
    // SAFETY: plain syscalls on this single-threaded process.
    unsafe {
        // COMMAND must not inherit the status pipe.
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::pthread_sigmask(libc::SIG_BLOCK, &signals(), std::ptr::null_mut());
    }
    let mut cmd = Command::new(program);
    cmd.arg0(argv0).args(rest).process_group(0);
    // SAFETY: async-signal-safe calls only. If the guard is killed,
    // COMMAND goes with it; COMMAND starts with no signal blocked (a
    // blocked mask survives exec, and would make it deaf to SIGTERM).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            report(&mut status, &format!("error cannot run {}: {e}", program.to_string_lossy()));
            return ExitCode::from(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    drop(child); // reaped below with waitpid
    report(&mut status, &format!("pid {pid}"));
    detach_stdio();
    supervise(pid, grace, &mut status)
}

/// The signals the guard waits for synchronously.
fn signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGUSR1, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// The guard's own stdio goes to /dev/null, so that the pipes' EOFs
/// belong to COMMAND alone.
fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn report(status: &mut Option<File>, line: &str) {
    if let Some(f) = status {
        // The server may be gone: nothing to do about a failed write.
        let _ = writeln!(f, "{line}");
    }
}

fn supervise(pid: libc::pid_t, grace: Duration, status: &mut Option<File>) -> ExitCode {
    let set = signals();
    let mut stage = Stage::Running;
    let mut code = None::<u8>;
    loop {
        let deadline = match stage {
            Stage::Running => None,
            Stage::Eof(d) | Stage::Term(d) | Stage::Kill(d) => Some(d),
        };
        let signal = wait_signal(&set, deadline);
        match signal {
            Some(libc::SIGCHLD) | None => {}
            Some(libc::SIGUSR1) => {
                if stage == Stage::Running {
                    stage = Stage::Eof(Instant::now() + grace);
                }
            }
            Some(_) => {
                if matches!(stage, Stage::Running | Stage::Eof(_)) {
                    signal_all(pid, libc::SIGTERM);
                    stage = Stage::Term(Instant::now() + grace);
                }
            }
        }
        let now = Instant::now();
        match stage {
            Stage::Eof(d) if now >= d => {
                signal_all(pid, libc::SIGTERM);
                stage = Stage::Term(now + grace);
            }
            Stage::Term(d) if now >= d => {
                signal_all(pid, libc::SIGKILL);
                stage = Stage::Kill(now + KILL_SWEEP);
            }
            Stage::Kill(d) if now >= d => return ExitCode::from(code.unwrap_or(137)),
            Stage::Kill(_) => signal_all(pid, libc::SIGKILL),
            _ => {}
        }
        // Reap everything that ended: COMMAND, and what was left in its
        // group and re-parented to us.
        loop {
            let mut wstatus = 0;
            // SAFETY: waitpid writes the status we own.
            let r = unsafe { libc::waitpid(-1, &mut wstatus, libc::WNOHANG) };
            if r == 0 {
                break;
            }
            if r < 0 {
                // ECHILD: nothing is left.
                return ExitCode::from(code.unwrap_or(0));
            }
            if r == pid {
                let (c, text) = describe(wstatus);
                code = Some(c);
                report(status, &format!("exit {text}"));
                *status = None; // EOF for the server
            }
        }
    }
}

/// Waits for one of `set`, or until `deadline`; `None` on timeout.
fn wait_signal(set: &libc::sigset_t, deadline: Option<Instant>) -> Option<i32> {
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        }
    });
    // SAFETY: sigtimedwait reads the set and timeout we own; a null
    // timeout waits without limit.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        match &timeout {
            Some(t) => libc::sigtimedwait(set, &mut info, t),
            None => libc::sigtimedwait(set, &mut info, std::ptr::null()),
        }
    };
    (r > 0).then_some(r)
}

/// Signals COMMAND's process group and every process re-parented to the
/// guard (one that left the group and lost its parent).
fn signal_all(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill(2) on the group we created and on our own children.
    unsafe { libc::kill(-pid, sig) };
    let me = std::process::id();
    if let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        for child in list.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
            // SAFETY: as above; a child of ours cannot be recycled before
            // we reap it.
            unsafe { libc::kill(child, sig) };
        }
    }
}

/// An exit status as a shell would give it, and in words.
fn describe(wstatus: i32) -> (u8, String) {
    if libc::WIFEXITED(wstatus) {
        let c = libc::WEXITSTATUS(wstatus);
        (c as u8, format!("status {c}"))
    } else if libc::WIFSIGNALED(wstatus) {
        let s = libc::WTERMSIG(wstatus);
        ((128 + s) as u8, format!("signal {s}"))
    } else {
        (1, format!("wait status {wstatus}"))
    }
}
