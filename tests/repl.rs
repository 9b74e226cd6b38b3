//! The `connect` REPL driven through a pseudo-terminal against the real
//! `ssechan serve`: what a person at a keyboard sees and sends.
#![cfg(unix)]

#[path = "support/bench_servers.rs"]
mod bench_servers;
#[path = "support/mcp_peers.rs"]
mod mcp_peers;
#[path = "support/client_procs.rs"]
mod procs;
#[path = "support/client_silent.rs"]
mod silent;
mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use expectrl::process::unix::WaitStatus;
use expectrl::{Expect, Regex, Session};
use procs::{Serve, WAIT, bin};
use serde_json::json;

/// A REPL on a pty, with everything it printed so far, so a test can wait
/// for output in any order and for the editor to be reading again.
struct Repl {
    session: expectrl::session::OsSession,
    seen: Vec<u8>,
    /// Where the next `expect` starts looking.
    pos: usize,
}

/// Matches whatever output is there (at least a byte): [`Repl::fill`]
/// reads by chunks.
const ANYTHING: &str = "(?s-u).+";

/// rustyline turns bracketed paste on each time it starts reading a line
/// (not when it only redraws after an external print): the sign that keys
/// typed now reach the editor in raw mode.
const READING: &str = "\x1b[?2004h";

impl Repl {
    /// `ssechan connect URL` on a pty, history under `data_home`.
    fn start(url: &str, data_home: &std::path::Path, color: bool) -> Repl {
        Self::start_with(&[url], data_home, color)
    }

    /// `ssechan connect ARGS` (the URL included).
    fn start_with(args: &[&str], data_home: &std::path::Path, color: bool) -> Repl {
        let mut cmd = Command::new(bin());
        cmd.arg("connect").args(args).env("XDG_DATA_HOME", data_home).env("TERM", "xterm");
        cmd.env_remove("RUST_LOG");
        if color {
            cmd.env_remove("NO_COLOR");
        } else {
            cmd.env("NO_COLOR", "1");
        }
        let mut session = Session::spawn(cmd).expect("spawn connect on a pty");
        session.set_expect_timeout(Some(Duration::from_millis(100)));
        Repl { session, seen: Vec::new(), pos: 0 }
    }

    /// Reads more output; false at EOF.
    fn fill(&mut self) -> bool {
        match self.session.expect(Regex(ANYTHING)) {
            Ok(c) => {
                self.seen.extend_from_slice(c.as_bytes());
                true
            }
            Err(expectrl::Error::ExpectTimeout) => true,
            Err(_) => false,
        }
    }

    /// Index of `needle` at or after `from`, reading until it shows.
    fn find(&mut self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let n = needle.as_bytes();
            if let Some(i) = self.seen[from..].windows(n.len()).position(|w| w == n) {
                return from + i;
            }
            if Instant::now() > deadline || !self.fill() {
                let after = String::from_utf8_lossy(&self.seen[from..]);
                panic!("no {needle:?} on the screen; after {from}:\n{after:?}");
            }
        }
    }

    /// Waits for `needle` after the last match and moves past it.
    fn expect(&mut self, needle: &str) {
        let i = self.find(needle, self.pos);
        self.pos = i + needle.len();
    }

    /// Types `text` key by key, each after the echo of the one before (looked
    /// for only in output that came after the key was sent), as a person
    /// does. Keys sent in one write are covered by their own test.
    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let key = c.to_string();
            let mark = self.seen.len();
            self.session.send(&key).unwrap();
            let i = self.find(&key, mark);
            self.pos = self.pos.max(i + key.len());
        }
    }

    /// Types `line`, presses Enter and waits until the editor reads the
    /// next line, without consuming what was printed meanwhile.
    fn enter(&mut self, line: &str) {
        self.type_text(line);
        let mark = self.seen.len();
        self.session.send("\r").unwrap();
        self.find(READING, mark);
    }

    /// Types `line` and Enter when no next line is expected (/quit).
    fn enter_last(&mut self, line: &str) {
        self.type_text(line);
        self.session.send("\r").unwrap();
    }

    fn send_key(&mut self, key: &str) {
        self.session.send(key).unwrap();
    }

    /// Waits until the REPL connected and reads a line, so no status line
    /// lands in the middle of the keys a test types next.
    fn until_connected(&mut self, id: &str) {
        self.expect(&format!("connected as {id}"));
        self.find(READING, 0);
    }

    /// Waits for the exit; the exit code.
    fn exit_code(&mut self) -> i32 {
        // Drain the pty so the child never blocks writing to it.
        let deadline = Instant::now() + WAIT;
        while self.fill() && Instant::now() < deadline {}
        loop {
            match self.session.get_process().status() {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!(
                    "REPL did not exit cleanly: {other:?}\n{:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }
}

#[test]
fn typing_survives_an_incoming_message_and_status_and_quit_work() {
    let home = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&[]);
    let mut s = Repl::start(&serve.url, home.path(), false);
    let id = serve.client();
    s.until_connected(&id);

    // Half a line typed, then a message arrives.
    s.type_text("partial li");
    serve.command(json!({"client": id, "data": "incoming while typing"}));
    s.expect("incoming while typing");
    // The prompt and the half-typed line are redrawn below it.
    s.expect("> partial li");
    s.enter("ne, finished");
    assert_eq!(serve.messages(1), ["partial line, finished"], "the typed line arrives whole");

    // The server has the message; the POST's answer may still be on its way.
    for attempt in 0.. {
        s.enter("/status");
        s.expect("sent:          1 (acknowledged ");
        let end = s.find(", refused 0)", s.pos);
        let acked = String::from_utf8_lossy(&s.seen[s.pos..end]).into_owned();
        s.pos = end;
        if acked == "1" {
            break;
        }
        assert!(attempt < 100, "the POST was never acknowledged");
    }
    s.enter("/status");
    s.expect(&format!("client id:     {id}"));
    s.expect("state:         open");
    s.expect("sent:          1 (acknowledged 1, refused 0)");
    s.expect("received:      1");
    s.expect("last event id: 1");

    s.enter_last("/quit");
    assert_eq!(s.exit_code(), 0);
    let history = std::fs::read_to_string(home.path().join("ssechan/history")).unwrap();
    assert!(history.contains("partial line, finished"), "{history}");
    assert!(history.contains("/status"), "{history}");
}

#[test]
fn tab_completes_commands_and_ctrl_c_clears_the_line() {
    let home = tempfile::tempdir().unwrap();
    let serve = Serve::start(&[]);
    let mut s = Repl::start(&serve.url, home.path(), false);
    let id = serve.client();
    s.until_connected(&id);
    s.type_text("/sta");
    s.send_key("\t");
    s.expect("/status");
    s.enter("");
    s.expect(&format!("client id:     {id}"));

    s.type_text("thrown away");
    let mark = s.seen.len();
    s.send_key("\x03");
    s.find(READING, mark);
    s.enter("kept");
    assert_eq!(serve.messages(1), ["kept"]);

    // Ctrl-D on an empty line leaves with 0.
    s.send_key("\x04");
    assert_eq!(s.exit_code(), 0);
}

#[test]
fn json_probes_the_server_and_drop_resumes() {
    let home = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&["--keep-alive", "30s"]);
    let mut s = Repl::start(&serve.url, home.path(), false);
    let id = serve.client();
    s.until_connected(&id);
    s.enter("/json 42");
    s.expect("POST messageId=0 → 400");
    s.expect("not a string");
    s.enter("/status");
    s.expect("sent:          1 (acknowledged 0, refused 1)");
    s.enter("/json \"raw ok\"");
    s.expect("POST messageId=0 → 200");
    s.enter("after");
    assert_eq!(serve.messages(2), ["raw ok", "after"], "a refused probe leaves no gap");

    s.enter("/drop");
    s.expect("disconnected: stream dropped on purpose");
    s.expect("resumed");
    serve.command(json!({"client": id, "data": "still here"}));
    s.expect("still here");
    s.enter_last("/close");
    assert_eq!(s.exit_code(), 0);
}

#[test]
fn server_close_ends_the_repl_and_status_is_dim() {
    let home = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&[]);
    let mut s = Repl::start(&serve.url, home.path(), true);
    let id = serve.client();
    s.until_connected(&id);
    s.find(&format!("\x1b[2mconnected as {id}"), 0);
    serve.command(json!({"client": id, "close": true}));
    s.expect("\x1b[2mclosed by the server");
    assert_eq!(s.exit_code(), 0);
}

#[test]
fn keys_that_arrive_in_one_read_are_echoed_at_once() {
    // Fast typing over ssh, or a terminal without bracketed paste: several
    // keys in one read. Each must show without waiting for another event.
    let home = tempfile::tempdir().unwrap();
    let serve = Serve::start(&[]);
    let mut s = Repl::start(&serve.url, home.path(), false);
    let id = serve.client();
    s.until_connected(&id);
    let mark = s.seen.len();
    s.send_key("pasted at once");
    s.find("pasted at once", mark);
    let mark = s.seen.len();
    s.send_key("\r");
    s.find(READING, mark);
    assert_eq!(serve.messages(1), ["pasted at once"]);
    s.send_key("\x04");
    assert_eq!(s.exit_code(), 0);
}

#[test]
fn close_tells_the_server() {
    // `/close` sends `DELETE ?sseClientId=ID` (the server closes the
    // connection for good) instead of leaving a suspended stream behind.
    let home = tempfile::tempdir().unwrap();
    let server = silent::SilentServer::start();
    let mut s = Repl::start_with(&["--client-id", "me", &server.url], home.path(), false);
    s.until_connected("me");
    s.enter_last("/close");
    assert_eq!(s.exit_code(), 0);
    let seen = server.wait_for_gets(2, WAIT);
    assert!(
        seen.iter().any(|g| g.request_line.starts_with("DELETE /sse?sseClientId=me ")),
        "{seen:?}"
    );
}

#[test]
fn giving_up_is_said_once() {
    let home = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&[]);
    let args = ["--retry-initial", "20ms", "--retry-max", "50ms", "--max-retries", "1", &serve.url];
    let mut s = Repl::start_with(&args, home.path(), false);
    let id = serve.client();
    s.until_connected(&id);
    serve.command(json!({"client": id, "data": "a real stream"}));
    s.expect("a real stream");
    serve.proc.kill();
    assert_eq!(s.exit_code(), 1);
    let screen = String::from_utf8_lossy(&s.seen).into_owned();
    assert_eq!(screen.matches("gave up after").count(), 1, "{screen:?}");
}

#[test]
fn mcp_lists_and_calls_tools_with_their_names_completed() {
    let home = tempfile::tempdir().unwrap();
    let bridge = mcp_peers::bridge_args(&[]);
    let bridge: Vec<&str> = bridge.iter().map(String::as_str).collect();
    let serve = Serve::start(&bridge);
    let mut s = Repl::start_with(&["--mcp", &serve.url], home.path(), false);
    s.expect("connected to mcp-servers/everything");
    s.expect("capabilities: tools");
    s.find(READING, 0);
    s.enter("/tools");
    s.expect("  echo  ");
    s.expect("  get-sum  ");
    // The tool's name completes from what /tools listed.
    s.type_text("/call ec");
    s.send_key("\t");
    s.expect("/call echo ");
    s.enter(r#"{"message": "from the pty"}"#);
    s.expect("Echo: from the pty");
    // A raw JSON-RPC line: its answer shows as JSON.
    s.enter(r#"{"jsonrpc":"2.0","id":"raw","method":"tools/call","params":{"name":"get-sum","arguments":{"a":1,"b":2}}}"#);
    s.expect(r#""id":"raw""#);
    s.enter("/status");
    s.expect("revision:      2025-11-25");
    s.enter_last("/quit");
    assert_eq!(s.exit_code(), 0);
}

#[test]
fn status_and_the_exit_show_what_retries_hid() {
    // bench's faulty echo server answers the first POST of messageId 1
    // with 503 and takes it when sent again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(bench_servers::faulty_echo(bench_servers::Fault::RefuseOnce(2, 503)));
    let home = tempfile::tempdir().unwrap();
    let args = ["--retry-initial", "20ms", "--retry-max", "50ms", "--client-id", "me", &url];
    let mut s = Repl::start_with(&args, home.path(), false);
    s.until_connected("me");
    s.enter("zero");
    s.enter("one");
    s.expect("message 1: server answered 503: server busy, try again (retrying)");
    for attempt in 0.. {
        s.enter("/status");
        s.expect("sent:          2 (acknowledged ");
        let end = s.find(", refused 0)", s.pos);
        let acked = String::from_utf8_lossy(&s.seen[s.pos..end]).into_owned();
        s.pos = end;
        if acked == "2" {
            break;
        }
        assert!(attempt < 100, "the POSTs were never acknowledged");
    }
    s.expect("refusals:      1 of 3 POSTs answered with an error status: 503 \u{d7}1");
    s.enter_last("/quit");
    assert_eq!(s.exit_code(), 0);
    let screen = String::from_utf8_lossy(&s.seen).into_owned();
    let exit = "refusals: 1 of 3 POSTs answered with an error status: 503 \u{d7}1";
    assert_eq!(screen.matches(exit).count(), 1, "{screen:?}");
}
