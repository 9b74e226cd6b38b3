//! `connect --mcp`: an MCP client for people and for scripts.
//!
//! It connects ([`McpClient::connect`]: the era, the handshake), says
//! whom it reached, then on a terminal runs a REPL (`/tools`, `/call NAME
//! {json}`, `/resources`, `/prompts`, raw JSON-RPC lines, tool names
//! completed), and in a pipe sends each stdin line as one JSON-RPC
//! message and prints each message of the server as one stdout line. At
//! stdin's end it waits (within `--answer-timeout`) for the answers it is
//! owed, keeps receiving `--wait`, ends the session and exits: 0 when
//! every request was answered, 1 when one was not or a message was
//! refused. Cut streams are resumed with `Last-Event-ID`, and said so on
//! stderr.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use serde_json::{Value, json};
use tokio::io::BufWriter;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use super::output::View;
use super::pipe::{DropSignal, StdinLines, flush, write_line};
use super::record;
use super::repl::{Commands, Editor, Input};
use crate::cli::ConnectArgs;
use crate::client::ClientEvent;
use crate::client::mcp::{McpClient, McpError, McpEvent, McpOptions};
use crate::client::{refusals_sentence, refused};
use crate::exit::UsageError;
use crate::mcp::client::{PER_REQUEST_REVISION, SESSION_REVISIONS, ServerInfo};
use crate::mcp::message::{Kind, Message, RequestId};
use crate::text::escape_controls;

/// Runs `connect --mcp`.
pub(super) async fn run(args: &ConnectArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if let Some(v) = &args.protocol_version
        && !SESSION_REVISIONS.contains(&v.as_str())
        && v != PER_REQUEST_REVISION
    {
        return Err(UsageError(format!(
            "--protocol-version {v}: ssechan speaks {} and {PER_REQUEST_REVISION}",
            SESSION_REVISIONS.join(", ")
        ))
        .into());
    }
    let mut config = super::config(args)?;
    config.mode = crate::client::Mode::Raw;
    let view = View {
        json: true,
        timestamps: false,
        show_comments: false,
        types: Vec::new(),
        quiet,
        recorder: recorder(args, config.url.as_str())?,
        client_id: None,
        terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let options = McpOptions { version: args.protocol_version.clone(), ..McpOptions::default() };
    let (client, info, events) = match McpClient::connect(config, options).await {
        Ok(x) => x,
        Err(McpError::Client(e)) => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(anyhow!("cannot start an MCP session: {e}")),
    };
    let hello = connected_text(&client, &info);
    record_line(
        &view,
        json!({ "event": "open", "server": info.name, "version": info.version, "protocol": info.protocol_version }),
    );
    let sent = Arc::new(Mutex::new(0u64));
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let counts = client.clone();
    let result = if interactive {
        repl(args, &view, client, events, &info, &hello, sent).await
    } else {
        if !quiet {
            for line in &hello {
                eprintln!("{line}");
            }
        }
        pipe(args, &view, client, events, sent).await
    };
    // A client that retries can hide a server's refusals: say them.
    if let Some(line) = refusals_line(&counts).filter(|_| !quiet) {
        eprintln!("{line}");
    }
    result
}

/// The exit line when the server refused any POST.
fn refusals_line(client: &McpClient) -> Option<String> {
    let stats = client.stats();
    let refusals = stats.refusals_by_status();
    let posts = stats.posts.load(Ordering::Relaxed);
    (refused(&refusals) > 0).then(|| format!("refusals: {}", refusals_sentence(&refusals, posts)))
}

/// `--record`: the header says `mcp`; sends and messages are JSON-RPC.
fn recorder(args: &ConnectArgs, url: &str) -> anyhow::Result<Option<Arc<record::Recorder>>> {
    let Some(path) = &args.record else { return Ok(None) };
    let header =
        record::Header::new(url, None, record::RecordMode::Mcp, std::time::SystemTime::now());
    let rec = record::Recorder::create(path, &header)
        .map_err(|e| UsageError(format!("cannot write --record {}: {e}", path.display())))?;
    Ok(Some(Arc::new(rec)))
}

fn record_line(view: &View, line: Value) {
    if let Some(rec) = &view.recorder
        && let Err(e) = rec.event(&line.to_string())
    {
        warn!("cannot write the record: {e}");
    }
}

/// Records a message handed to the client (numbered as sent).
fn record_send(view: &View, sent: &Mutex<u64>, msg: &Message) {
    let Some(rec) = &view.recorder else { return };
    let n = sent
        .lock()
        .map(|mut n| {
            *n += 1;
            *n - 1
        })
        .unwrap_or(0);
    if let Err(e) = rec.send(n, msg.to_line().as_bytes()) {
        warn!("cannot write the record: {e}");
    }
}

/// Whom the client reached, for people: two lines.
fn connected_text(client: &McpClient, info: &ServerInfo) -> Vec<String> {
    let hs = client.handshake_state();
    let session = match hs.and_then(|h| h.session.as_deref()) {
        Some(id) => format!(", session {}", escape_controls(id)),
        None if hs.is_some_and(|h| h.per_request) => ", no session (per-request era)".into(),
        None => ", no session id".into(),
    };
    let mut lines = vec![
        format!(
            "connected to {}{} (revision {}{session})",
            escape_controls(&info.name),
            match info.version.as_str() {
                "" => String::new(),
                v => format!(" {}", escape_controls(v)),
            },
            escape_controls(&info.protocol_version)
        ),
        format!("capabilities: {}", escape_controls(&info.capability_list())),
    ];
    if let Some(h) = hs {
        tracing::info!("era: {}", h.how);
    }
    if let Some(i) = &info.instructions {
        // Written for a model, often pages long: their first line.
        let first = i.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let more = if i.trim().lines().count() > 1 { " …" } else { "" };
        lines.push(format!("instructions: {}{more}", escape_controls(first.trim())));
    }
    lines
}

/// A status line for an event, for stderr or the REPL; `None` for a
/// message of the server.
fn status_text(ev: &McpEvent) -> Option<String> {
    Some(match ev {
        McpEvent::Message(_) => return None,
        McpEvent::Cut { stream, reason } => format!("{stream}: cut ({reason})"),
        McpEvent::Reconnecting { stream, delay, .. } => {
            format!(
                "{stream}: resuming in {} with Last-Event-ID",
                humantime::format_duration(*delay)
            )
        }
        McpEvent::AttemptFailed { stream, attempt, reason } => {
            format!("{stream}: attempt {attempt} to resume failed: {reason}")
        }
        McpEvent::Resumed { stream, last_event_id: Some(id) } => {
            format!("{stream}: resumed after event {}", escape_controls(id))
        }
        McpEvent::Resumed { stream, last_event_id: None } => format!("{stream}: resumed"),
        McpEvent::Unanswered { id, reason } => {
            format!("request {} gets no answer: {reason}", escape_controls(id.as_json()))
        }
        McpEvent::Refused { what, reason } => format!("{what} not delivered: {reason}"),
        McpEvent::SessionEnded => "the server ended the session (404)".into(),
        McpEvent::NoGetStream { reason } => format!("no GET stream: {reason}"),
    })
}

/// Records an event as the record format has it (`connect --format
/// json`'s objects where there is one).
fn record_event(view: &View, ev: &McpEvent) {
    if view.recorder.is_none() {
        return;
    }
    let as_client = match ev {
        McpEvent::Message(m) => Some(ClientEvent::Message(m.to_line())),
        McpEvent::Cut { stream, reason } => {
            Some(ClientEvent::Disconnected { reason: format!("{stream}: {reason}") })
        }
        McpEvent::Reconnecting { attempt, delay, .. } => {
            Some(ClientEvent::Reconnecting { attempt: *attempt, delay: *delay })
        }
        McpEvent::AttemptFailed { attempt, reason, .. } => {
            Some(ClientEvent::AttemptFailed { attempt: *attempt, reason: reason.clone() })
        }
        McpEvent::Resumed { last_event_id, .. } => {
            Some(ClientEvent::Resumed { last_event_id: last_event_id.clone() })
        }
        _ => None,
    };
    match as_client {
        Some(ev) => view.record(&ev),
        None => record_line(view, json!({ "event": "failed", "reason": status_text(ev) })),
    }
}

/// What makes a run fail at its end.
#[derive(Default)]
struct Losses {
    unanswered: u64,
    refused: u64,
}

impl Losses {
    fn count(&mut self, ev: &McpEvent) {
        match ev {
            McpEvent::Unanswered { .. } => self.unanswered += 1,
            McpEvent::Refused { .. } => self.refused += 1,
            _ => {}
        }
    }

    fn verdict(&self) -> anyhow::Result<ExitCode> {
        match (self.unanswered, self.refused) {
            (0, 0) => Ok(ExitCode::SUCCESS),
            (u, r) => Err(anyhow!("{u} request(s) got no answer, {r} message(s) were refused")),
        }
    }
}

/// Where the pipe run stands on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    /// stdin ended: the answers owed may take until then.
    Settling(Instant),
    /// Settled: receiving until then.
    Waiting(Instant),
}

async fn pipe(
    args: &ConnectArgs,
    view: &View,
    client: McpClient,
    mut events: mpsc::Receiver<McpEvent>,
    sent: Arc<Mutex<u64>>,
) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
    let (eof_tx, mut eof_rx) = oneshot::channel::<()>();
    tokio::spawn(feed(client.clone(), args.send.clone(), eof_tx, view_recorder(view), sent));
    let mut drop_signal = DropSignal::new();
    let mut phase = Phase::Sending;
    let mut losses = Losses::default();
    let mut received = 0u64;
    loop {
        let deadline = match phase {
            Phase::Settling(at) | Phase::Waiting(at) => Some(at),
            Phase::Sending => None,
        };
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return Ok(ExitCode::SUCCESS) };
                record_event(view, &ev);
                losses.count(&ev);
                match &ev {
                    McpEvent::Message(m) => {
                        received += 1;
                        // JSON escapes C0 controls but not C1 or bidi ones.
                        let line = m.to_line();
                        let line = if view.terminal { escape_controls(&line).into_owned() } else { line };
                        if !write_line(&mut out, &line).await? {
                            client.stop();
                            return Ok(ExitCode::SUCCESS);
                        }
                        if events.is_empty() {
                            flush(&mut out).await?;
                        }
                    }
                    ev => {
                        if let Some(line) = status_text(ev).filter(|_| !view.quiet)
                            && !matches!(ev, McpEvent::NoGetStream { .. })
                        {
                            eprintln!("{line}");
                        }
                    }
                }
                if ev == McpEvent::SessionEnded {
                    flush(&mut out).await?;
                    return Err(anyhow!("the server ended the session (404)"));
                }
                if args.count.is_some_and(|n| received >= n) {
                    flush(&mut out).await?;
                    client.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ = &mut eof_rx, if phase == Phase::Sending => {
                phase = Phase::Settling(Instant::now() + args.answer_timeout);
            }
            _ = client.wait_settled(), if matches!(phase, Phase::Settling(_)) => {
                phase = Phase::Waiting(Instant::now() + args.wait);
            }
            _ = drop_signal.recv() => client.drop_streams(),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                flush(&mut out).await?;
                if let Phase::Settling(_) = phase {
                    let ids: Vec<String> = client.owed_ids().iter().map(|i| escape_controls(i.as_json()).into_owned()).collect();
                    client.close().await;
                    return Err(anyhow!(
                        "{} answer(s) still owed {} after stdin ended: request(s) {}",
                        ids.len(),
                        humantime::format_duration(args.answer_timeout),
                        ids.join(", ")
                    ));
                }
                client.close().await;
                record_line(view, json!({ "event": "closed", "by": "client" }));
                return losses.verdict();
            }
        }
    }
}

fn view_recorder(view: &View) -> Option<Arc<record::Recorder>> {
    view.recorder.clone()
}

/// Sends `--send` messages, then every stdin line; signals stdin's end.
async fn feed(
    client: McpClient,
    first: Vec<String>,
    eof: oneshot::Sender<()>,
    recorder: Option<Arc<record::Recorder>>,
    sent: Arc<Mutex<u64>>,
) {
    let view = View {
        json: true,
        timestamps: false,
        show_comments: false,
        types: Vec::new(),
        quiet: true,
        recorder,
        client_id: None,
        terminal: false,
    };
    for (n, line) in first.iter().enumerate() {
        if !send_line(&client, &view, &sent, line, &format!("--send {}", n + 1)).await {
            return;
        }
    }
    let mut stdin = StdinLines::new();
    while let Some((n, line)) = stdin.next(|| client.is_stopped()).await {
        if line.trim().is_empty() {
            continue;
        }
        if !send_line(&client, &view, &sent, &line, &format!("stdin line {n}")).await {
            return;
        }
    }
    if stdin.ended {
        let _ = eof.send(());
    }
}

/// Sends one line as a message; `false` once the client has stopped.
async fn send_line(
    client: &McpClient,
    view: &View,
    sent: &Mutex<u64>,
    line: &str,
    what: &str,
) -> bool {
    let msg = match Message::parse(line.as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            warn!("{what} is not a JSON-RPC message ({e}); not sent");
            return true;
        }
    };
    record_send(view, sent, &msg);
    match client.send(msg).await {
        Ok(()) => true,
        Err(McpError::Stopped) => false,
        Err(e) => {
            warn!("{what} not sent: {e}");
            true
        }
    }
}

// ----- the REPL

const COMMANDS: &[(&str, &str)] = &[
    ("/help", "this list"),
    ("/tools", "the server's tools"),
    ("/call", "/call NAME {json}: call tool NAME with these arguments (default {})"),
    ("/resources", "the server's resources"),
    ("/prompts", "the server's prompts"),
    ("/status", "session, revision, answers owed, streams cut and resumed"),
    ("/drop", "cut every open stream on purpose; each resumes with Last-Event-ID"),
    ("/close", "end the session (DELETE) and leave at once"),
    ("/quit", "leave once the answers owed have come (also Ctrl-D)"),
];

/// What a REPL request was for, to show its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Tools,
    Call,
    Resources,
    Prompts,
}

/// A typed line, parsed.
#[derive(Debug, Clone, PartialEq)]
enum Typed {
    Help,
    Ask(Asked, Value),
    Status,
    Drop,
    Close,
    Quit,
    Raw(String),
    Bad(String),
}

/// Parses a typed line: a command, or a JSON-RPC message.
fn parse(line: &str) -> Typed {
    let line = line.trim();
    if line.starts_with('{') {
        return Typed::Raw(line.to_owned());
    }
    let (name, arg) = match line.split_once(' ') {
        Some((n, a)) => (n, a.trim()),
        None => (line, ""),
    };
    match name {
        "/help" | "/?" => Typed::Help,
        "/tools" => Typed::Ask(Asked::Tools, json!({ "method": "tools/list" })),
        "/resources" => Typed::Ask(Asked::Resources, json!({ "method": "resources/list" })),
        "/prompts" => Typed::Ask(Asked::Prompts, json!({ "method": "prompts/list" })),
        "/call" => {
            let (tool, args) = match arg.split_once(' ') {
                Some((t, a)) => (t, a.trim()),
                None => (arg, ""),
            };
            if tool.is_empty() {
                return Typed::Bad("/call NAME {json}: which tool?".into());
            }
            let args: Value = match args {
                "" => json!({}),
                a => match serde_json::from_str(a) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(_) => return Typed::Bad("/call: the arguments are a JSON object".into()),
                    Err(e) => return Typed::Bad(format!("/call: the arguments are not JSON: {e}")),
                },
            };
            Typed::Ask(
                Asked::Call,
                json!({ "method": "tools/call", "params": { "name": tool, "arguments": args } }),
            )
        }
        "/status" => Typed::Status,
        "/drop" => Typed::Drop,
        "/close" => Typed::Close,
        "/quit" | "/exit" => Typed::Quit,
        _ => Typed::Bad(format!(
            "not a JSON-RPC message nor a command ({}); /help lists them",
            escape_controls(name)
        )),
    }
}

async fn repl(
    args: &ConnectArgs,
    view: &View,
    client: McpClient,
    mut events: mpsc::Receiver<McpEvent>,
    info: &ServerInfo,
    hello: &[String],
    sent: Arc<Mutex<u64>>,
) -> anyhow::Result<ExitCode> {
    let names = Arc::new(Mutex::new(Vec::new()));
    let commands = Commands {
        header: "Type a JSON-RPC message to send it, or a command:",
        list: COMMANDS,
        with_argument: &[],
        named: Some(("/call", names.clone())),
        footer: "  Messages of the server show as they come. Ctrl-C clears the line.",
    };
    let mut editor = Editor::start(commands)?;
    for line in hello {
        editor.status(line).await;
    }
    let mut asked: HashMap<RequestId, Asked> = HashMap::new();
    let mut next_id = 0u64;
    let mut numbered = |mut v: Value| {
        next_id += 1;
        v["jsonrpc"] = json!("2.0");
        v["id"] = json!(next_id);
        Message::from_value(v).ok()
    };
    if info.capabilities.get("tools").is_some()
        && let Some(m) = numbered(json!({ "method": "tools/list" }))
    {
        // Quietly, for completion: its answer is not shown.
        let (client, names) = (client.clone(), names.clone());
        tokio::spawn(async move {
            if let Ok(r) = client.request(m).await {
                *names.lock().unwrap_or_else(|e| e.into_inner()) = tool_names(&r);
            }
        });
    }
    let mut losses = Losses::default();
    let result = loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break Ok(ExitCode::SUCCESS) };
                record_event(view, &ev);
                losses.count(&ev);
                let text = match &ev {
                    McpEvent::Message(m) => shown(m, &mut asked, &names),
                    ev => editor.style.dim(&status_text(ev).unwrap_or_default()),
                };
                editor.say(text).await;
                if ev == McpEvent::SessionEnded {
                    break Err(anyhow!("the server ended the session (404)"));
                }
            }
            input = editor.input.recv() => {
                let line = match input {
                    Some(Input::Line(line)) => line,
                    Some(Input::Eof) | None => "/quit".into(),
                };
                let msg = match parse(&line) {
                    Typed::Help => {
                        editor.say(editor.help()).await;
                        continue;
                    }
                    Typed::Status => {
                        editor.say(status_block(&client)).await;
                        continue;
                    }
                    Typed::Drop => {
                        client.drop_streams();
                        continue;
                    }
                    Typed::Bad(why) => {
                        editor.status(&why).await;
                        continue;
                    }
                    Typed::Close => {
                        client.close().await;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Typed::Quit => {
                        if tokio::time::timeout(args.answer_timeout, client.wait_settled()).await.is_err() {
                            warn!("leaving with {} answer(s) owed", client.owed());
                        }
                        client.close().await;
                        return losses.verdict();
                    }
                    Typed::Ask(what, v) => match numbered(v) {
                        Some(m) => {
                            if let Kind::Request { id, .. } = &m.kind {
                                asked.insert(id.clone(), what);
                            }
                            m
                        }
                        None => continue,
                    },
                    Typed::Raw(text) => match Message::parse(text.as_bytes()) {
                        Ok(m) => m,
                        Err(e) => {
                            editor.status(&format!("not sent: {e}")).await;
                            continue;
                        }
                    },
                };
                record_send(view, &sent, &msg);
                if let Err(e) = client.send(msg).await {
                    editor.status(&format!("not sent: {e}")).await;
                }
            }
        }
    };
    editor.finish().await;
    result
}

/// How a message of the server shows in the REPL: the answer to a
/// command readably, anything else as its JSON.
fn shown(m: &Message, asked: &mut HashMap<RequestId, Asked>, names: &Mutex<Vec<String>>) -> String {
    let what = match &m.kind {
        Kind::Response { id } => asked.remove(id),
        _ => None,
    };
    let Some(what) = what else { return format!("{}\n", escape_controls(&m.to_line())) };
    if let Some(e) = m.value.get("error") {
        return format!(
            "error {}: {}\n",
            e["code"],
            escape_controls(e["message"].as_str().unwrap_or(""))
        );
    }
    let result = &m.value["result"];
    let list = |key: &str, name: &str, about: &str| -> String {
        let items = result[key].as_array().map(Vec::as_slice).unwrap_or_default();
        if items.is_empty() {
            return format!("(no {key})\n");
        }
        items
            .iter()
            .map(|i| {
                let n = i[name].as_str().unwrap_or("?");
                match i[about].as_str() {
                    Some(d) => format!("  {}  {}\n", escape_controls(n), escape_controls(d)),
                    None => format!("  {}\n", escape_controls(n)),
                }
            })
            .collect()
    };
    match what {
        Asked::Tools => {
            *names.lock().unwrap_or_else(|e| e.into_inner()) = tool_names(m);
            list("tools", "name", "description")
        }
        Asked::Resources => list("resources", "uri", "name"),
        Asked::Prompts => list("prompts", "name", "description"),
        Asked::Call => {
            let mut out = String::new();
            if result["isError"] == json!(true) {
                out.push_str("the tool failed:\n");
            }
            for c in result["content"].as_array().map(Vec::as_slice).unwrap_or_default() {
                match c["type"].as_str() {
                    Some("text") => out.push_str(&format!(
                        "{}\n",
                        escape_controls(c["text"].as_str().unwrap_or(""))
                    )),
                    Some(kind) => out.push_str(&format!(
                        "[{} {}]\n",
                        escape_controls(kind),
                        escape_controls(c["mimeType"].as_str().unwrap_or(""))
                    )),
                    None => {}
                }
            }
            if out.is_empty() {
                out = format!("{}\n", escape_controls(&result.to_string()));
            }
            out
        }
    }
}

/// The names of a `tools/list` answer.
fn tool_names(m: &Message) -> Vec<String> {
    m.value["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The `/status` block.
fn status_block(client: &McpClient) -> String {
    let h = client.handshake_state();
    let stats = client.stats();
    let mut out = String::new();
    if let Some(h) = h {
        out.push_str(&format!("revision:      {}\n", h.version));
        let session =
            h.session.as_deref().map_or("none".into(), |s| escape_controls(s).into_owned());
        out.push_str(&format!("session:       {session}\n"));
    }
    out.push_str(&format!("answers owed:  {}\n", client.owed()));
    out.push_str(&format!("streams cut:   {}\n", stats.cuts.load(Ordering::Relaxed)));
    out.push_str(&format!("resumed:       {}\n", stats.resumes.load(Ordering::Relaxed)));
    let posts = stats.posts.load(Ordering::Relaxed);
    let refusals = refusals_sentence(&stats.refusals_by_status(), posts);
    out.push_str(&format!("refusals:      {refusals}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines() {
        assert_eq!(parse("/tools"), Typed::Ask(Asked::Tools, json!({ "method": "tools/list" })));
        assert_eq!(
            parse("/call echo {\"message\": \"hi\"}"),
            Typed::Ask(
                Asked::Call,
                json!({ "method": "tools/call", "params": { "name": "echo", "arguments": { "message": "hi" } } })
            )
        );
        assert_eq!(
            parse("/call get-sum"),
            Typed::Ask(
                Asked::Call,
                json!({ "method": "tools/call", "params": { "name": "get-sum", "arguments": {} } })
            )
        );
        assert!(matches!(parse("/call"), Typed::Bad(_)));
        assert!(matches!(parse("/call x [1]"), Typed::Bad(_)));
        assert!(matches!(parse("/call x {"), Typed::Bad(_)));
        assert_eq!(parse(" {\"jsonrpc\":\"2.0\"} "), Typed::Raw("{\"jsonrpc\":\"2.0\"}".into()));
        assert!(matches!(parse("hello"), Typed::Bad(_)));
        assert_eq!(parse("/quit"), Typed::Quit);
    }

    #[test]
    fn answers_to_commands_read_well() {
        let names = Mutex::new(Vec::new());
        let mut asked = HashMap::from([
            (RequestId::of_number(1), Asked::Tools),
            (RequestId::of_number(2), Asked::Call),
        ]);
        let tools = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echoes"},{"name":"get-sum"}]}}"#,
        )
        .unwrap();
        assert_eq!(shown(&tools, &mut asked, &names), "  echo  Echoes\n  get-sum\n");
        assert_eq!(*names.lock().unwrap(), ["echo", "get-sum"]);
        let call = Message::parse(
            br#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Echo: hi\u001b[2J"}]}}"#,
        )
        .unwrap();
        assert_eq!(shown(&call, &mut asked, &names), "Echo: hi^[[2J\n");
        // Not asked by a command (or asked and answered already): the JSON.
        assert!(shown(&call, &mut asked, &names).starts_with("{\"jsonrpc\""));
    }
}
