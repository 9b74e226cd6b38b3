//! The interactive REPL: rustyline on its own thread, the client on the
//! runtime. Incoming messages and state changes reach the screen through
//! rustyline's external printer, which redraws the line being typed below
//! them instead of cutting through it. The line editor ([`Editor`]) serves
//! the channel REPL here and MCP's (`connect/mcp.rs`) alike: each has its
//! own commands and completion, and reads the typed lines on the runtime.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{ExternalPrinter, Helper};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::exit_status;
use super::output::{View, status_line};
use crate::cli::ConnectArgs;
use crate::client::{ChannelClient, ClientEvent, Status};

const PROMPT: &str = "> ";

/// Slash commands, for `/help` and completion.
const COMMANDS: &[(&str, &str)] = &[
    ("/help", "this list"),
    ("/status", "client id, state, counts, last event id, reconnects, refusals"),
    ("/drop", "end the stream on purpose; the client reconnects and resumes"),
    ("/json", "/json BODY: POST BODY verbatim (e.g. /json 42) and show the answer"),
    ("/close", "close the channel (the server is told) and leave at once"),
    ("/quit", "leave once sent messages are acknowledged (also Ctrl-D)"),
];

/// A typed line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// Nothing to do (an empty line).
    Nothing,
    Send(String),
    Help,
    Status,
    Drop,
    Json(String),
    Close,
    Quit,
    Unknown(String),
}

/// Parses a typed line: `/cmd` is a command, `//text` sends `/text`.
pub(super) fn parse(line: &str) -> Command {
    if line.is_empty() {
        return Command::Nothing;
    }
    let Some(rest) = line.strip_prefix('/') else { return Command::Send(line.to_owned()) };
    if rest.starts_with('/') {
        return Command::Send(rest.to_owned());
    }
    let (name, arg) = match rest.split_once(' ') {
        Some((n, a)) => (n, a),
        None => (rest.trim_end(), ""),
    };
    match name {
        "help" | "?" => Command::Help,
        "status" => Command::Status,
        "drop" => Command::Drop,
        "json" => Command::Json(arg.to_owned()),
        "close" => Command::Close,
        "quit" | "exit" => Command::Quit,
        _ => Command::Unknown(format!("/{name}")),
    }
}

/// A REPL's commands, for `/help` and completion.
#[derive(Clone)]
pub(super) struct Commands {
    /// The help's first line.
    pub header: &'static str,
    /// Each command and what it does.
    pub list: &'static [(&'static str, &'static str)],
    /// Commands that take an argument (completed with a space after).
    pub with_argument: &'static [&'static str],
    /// A command whose first argument completes from a list that the
    /// runtime fills (`/call` and the server's tool names).
    pub named: Option<(&'static str, Arc<Mutex<Vec<String>>>)>,
    /// The help's last line.
    pub footer: &'static str,
}

/// The channel REPL's commands.
fn channel_commands() -> Commands {
    Commands {
        header: "Type a line to send it. Commands:",
        list: COMMANDS,
        with_argument: &["/json"],
        named: None,
        footer: "  A line starting with // sends it with one / removed. Ctrl-C clears the line.",
    }
}

/// Completes slash commands at the start of the line.
struct ReplHelper(Commands);

impl Completer for ReplHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let prefix = &line[..pos.min(line.len())];
        if let Some((command, names)) = &self.0.named
            && let Some(rest) = prefix.strip_prefix(command).and_then(|r| r.strip_prefix(' '))
            && !rest.contains(' ')
        {
            let names = names.lock().map(|n| n.clone()).unwrap_or_default();
            let start = prefix.len() - rest.len();
            return Ok((start, complete_name(rest, &names)));
        }
        Ok((0, complete(&self.0, prefix)))
    }
}

/// Candidates for the typed prefix; a command that takes an argument
/// keeps a space for it.
pub(super) fn complete(commands: &Commands, prefix: &str) -> Vec<String> {
    if !prefix.starts_with('/') || prefix.contains(' ') {
        return Vec::new();
    }
    commands
        .list
        .iter()
        .filter(|(c, _)| c.starts_with(prefix))
        .map(|(c, _)| {
            let takes = commands.with_argument.contains(c)
                || commands.named.as_ref().is_some_and(|(n, _)| n == c);
            if takes { format!("{c} ") } else { (*c).to_owned() }
        })
        .collect()
}

/// The names that start with `prefix`, each followed by a space.
fn complete_name(prefix: &str, names: &[String]) -> Vec<String> {
    names.iter().filter(|n| n.starts_with(prefix)).map(|n| format!("{n} ")).collect()
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// What the line editor thread hands the runtime.
pub(super) enum Input {
    /// A typed line (not empty).
    Line(String),
    /// Ctrl-D, or the terminal is gone.
    Eof,
}

/// Screen styling: dim status lines unless colour is off.
#[derive(Clone, Copy)]
pub(super) struct Style {
    color: bool,
}

impl Style {
    pub(super) fn dim(self, text: &str) -> String {
        if self.color { format!("\x1b[2m{text}\x1b[0m\n") } else { format!("{text}\n") }
    }
}

/// The line editor on its own thread, and the ways to it.
pub(super) struct Editor {
    /// Text for the screen, printed above the line being typed.
    pub print: mpsc::Sender<String>,
    pub input: mpsc::Receiver<Input>,
    pub style: Style,
    pub commands: Commands,
    /// Saved before rustyline's raw mode, to restore if we leave while it
    /// is still reading (the server closed, the client gave up).
    saved: terminal::Saved,
}

impl Editor {
    /// Starts the editor thread, with its history.
    pub(super) fn start(commands: Commands) -> anyhow::Result<Editor> {
        let style = Style { color: crate::logging::use_color(&std::io::stdout()) };
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor: LineEditor =
            rustyline::Editor::with_config(config).context("cannot start the line editor")?;
        editor.set_helper(Some(ReplHelper(commands.clone())));
        let history = history_path();
        if let Some(path) = &history
            && path.exists()
            && let Err(e) = editor.load_history(path)
        {
            warn!("cannot read history {}: {e}", path.display());
        }
        let printer = editor.create_external_printer().context("cannot print above the prompt")?;
        let (print, print_rx) = mpsc::channel::<String>(256);
        std::thread::spawn(move || print_loop(printer, print_rx));
        let saved = terminal::save();
        let (input_tx, input) = mpsc::channel::<Input>(16);
        std::thread::spawn(move || edit_loop(editor, input_tx, history));
        Ok(Editor { print, input, style, commands, saved })
    }

    /// Prints `text` above the prompt.
    pub(super) async fn say(&self, text: String) {
        let _ = self.print.send(text).await;
    }

    /// A status line, dim.
    pub(super) async fn status(&self, text: &str) {
        self.say(self.style.dim(text)).await;
    }

    /// The `/help` text.
    pub(super) fn help(&self) -> String {
        let mut s = format!("{}\n", self.commands.header);
        for (c, what) in self.commands.list {
            s.push_str(&format!("  {c:<8} {what}\n"));
        }
        s.push_str(&self.style.dim(self.commands.footer));
        s
    }

    /// Leaving while the editor thread still reads: lets the printer
    /// finish, then gives the terminal back in the state we found it.
    pub(super) async fn finish(self) {
        drop(self.print);
        tokio::time::sleep(Duration::from_millis(50)).await;
        terminal::restore(self.saved);
        println!();
    }
}

type LineEditor = rustyline::Editor<ReplHelper, FileHistory>;

pub(super) async fn run(
    args: &ConnectArgs,
    view: &View,
    client: ChannelClient,
    mut events: mpsc::Receiver<ClientEvent>,
) -> anyhow::Result<ExitCode> {
    let mut editor = Editor::start(channel_commands())?;
    let style = editor.style;
    for m in &args.send {
        if let Err(e) = client.send(m).await {
            editor.status(&format!("not sent: {e}")).await;
        }
    }
    let result = loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break Ok(ExitCode::SUCCESS) };
                view.record(&ev);
                if ev.is_terminal() && exit_status(&ev).is_err() {
                    // Said once, by the caller's error line.
                    break exit_status(&ev);
                }
                let text = match &ev {
                    ClientEvent::Comment(_) | ClientEvent::Message(_) | ClientEvent::Event(_) => {
                        match view.stdout_line(&ev) {
                            Some(line) => format!("{line}\n"),
                            None => continue,
                        }
                    }
                    ev => match status_line(ev, view.client_id.as_deref()) {
                        Some(status) => style.dim(&status),
                        None => continue,
                    },
                };
                editor.say(text).await;
                if ev.is_terminal() {
                    break exit_status(&ev);
                }
            }
            input = editor.input.recv() => {
                let line = match input {
                    Some(Input::Line(line)) => line,
                    Some(Input::Eof) | None => String::from("/quit"),
                };
                match parse(&line) {
                    Command::Nothing => {}
                    Command::Send(text) => {
                        if let Err(e) = client.send(&text).await {
                            editor.status(&format!("not sent: {e}")).await;
                        }
                    }
                    Command::Json(body) => {
                        let (client, print) = (client.clone(), editor.print.clone());
                        tokio::spawn(async move {
                            let line = match client.post_raw(body.into_bytes()).await {
                                Ok(o) if o.status == 0 => format!("POST failed: {}", o.reason),
                                Ok(o) => format!("POST messageId={} → {} {}", o.message_id, o.status, o.reason),
                                Err(e) => format!("POST failed: {e}"),
                            };
                            let _ = print.send(style.dim(&line)).await;
                        });
                    }
                    Command::Help => editor.say(editor.help()).await,
                    Command::Status => editor.say(status_text(&client.status())).await,
                    Command::Drop => client.drop_stream(),
                    Command::Unknown(name) => {
                        editor.status(&format!("unknown command {name}; /help lists them")).await;
                    }
                    Command::Quit => {
                        let grace = args.timeout;
                        if tokio::time::timeout(grace, client.wait_settled()).await.is_err() {
                            warn!("leaving with messages not yet acknowledged");
                        }
                        super::pipe::close(&client, view).await;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Command::Close => {
                        super::pipe::close(&client, view).await;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
    };
    editor.finish().await;
    result
}

/// Prints on the external printer, which may block while the editor
/// redraws, so it gets its own thread.
fn print_loop(mut printer: impl ExternalPrinter, mut rx: mpsc::Receiver<String>) {
    while let Some(text) = rx.blocking_recv() {
        if let Err(e) = printer.print(text) {
            debug!("external print failed: {e}");
            return;
        }
    }
}

/// The editor thread: hands over each typed line until Ctrl-D, an error,
/// or the runtime stops taking them.
fn edit_loop(mut editor: LineEditor, tx: mpsc::Sender<Input>, history: Option<PathBuf>) {
    let mut history_warned = false;
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            // Ctrl-C: the line is gone, the REPL stays.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                let _ = tx.blocking_send(Input::Eof);
                return;
            }
            Err(e) => {
                warn!("cannot read the terminal: {e}");
                let _ = tx.blocking_send(Input::Eof);
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        if let Some(path) = &history
            && let Err(e) = editor.save_history(path)
            && !history_warned
        {
            history_warned = true;
            warn!("cannot save history to {}: {e}", path.display());
        }
        let last = matches!(line.trim_end(), "/quit" | "/exit" | "/close");
        if tx.blocking_send(Input::Line(line)).is_err() || last {
            return;
        }
    }
}

/// The `/status` block.
pub(super) fn status_text(s: &Status) -> String {
    let mut out = String::new();
    if let Some(id) = &s.client_id {
        out.push_str(&format!("client id:     {id}\n"));
    }
    out.push_str(&format!("url:           {}\n", s.url));
    out.push_str(&format!("state:         {}\n", s.state.as_str()));
    out.push_str(&format!(
        "sent:          {} (acknowledged {}, refused {})\n",
        s.sent, s.acked, s.failed
    ));
    out.push_str(&format!("received:      {}\n", s.received));
    let last = if s.last_event_id.is_empty() { "none" } else { &s.last_event_id };
    out.push_str(&format!("last event id: {last}\n"));
    out.push_str(&format!("reconnects:    {}\n", s.reconnects));
    out.push_str(&format!(
        "refusals:      {}\n",
        crate::client::refusals_sentence(&s.refusals, s.posts)
    ));
    out
}

/// `<data dir>/ssechan/history`, its folder created; `None` (logged) when
/// there is no data dir or it cannot be made: history is a nicety.
fn history_path() -> Option<PathBuf> {
    let dir = dirs::data_dir()?.join("ssechan");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!("cannot create {}: {e}; history not kept", dir.display());
        return None;
    }
    Some(dir.join("history"))
}

/// Saving and restoring the terminal mode of stdin.
mod terminal {
    #[cfg(unix)]
    pub(super) type Saved = Option<libc::termios>;
    #[cfg(not(unix))]
    pub(super) type Saved = ();

    #[cfg(unix)]
    pub(super) fn save() -> Saved {
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the struct when it returns 0.
        let ok = unsafe { libc::tcgetattr(libc::STDIN_FILENO, t.as_mut_ptr()) } == 0;
        // SAFETY: initialised by the successful call above.
        ok.then(|| unsafe { t.assume_init() })
    }

    #[cfg(unix)]
    pub(super) fn restore(saved: Saved) {
        if let Some(t) = saved {
            // SAFETY: `t` came from tcgetattr on the same descriptor.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &t) };
        }
    }

    #[cfg(not(unix))]
    pub(super) fn save() -> Saved {}

    #[cfg(not(unix))]
    pub(super) fn restore(_: Saved) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse(""), Command::Nothing);
        assert_eq!(parse("hello"), Command::Send("hello".into()));
        assert_eq!(parse(" /status"), Command::Send(" /status".into()));
        assert_eq!(parse("//status"), Command::Send("/status".into()));
        assert_eq!(parse("/status"), Command::Status);
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/json {\"a\": 1}"), Command::Json("{\"a\": 1}".into()));
        assert_eq!(parse("/json"), Command::Json(String::new()));
        assert_eq!(parse("/nope x"), Command::Unknown("/nope".into()));
    }

    #[test]
    fn completion() {
        let c = channel_commands();
        assert_eq!(complete(&c, "/q"), ["/quit"]);
        assert_eq!(complete(&c, "/j"), ["/json "]);
        assert_eq!(
            complete(&c, "/"),
            COMMANDS
                .iter()
                .map(|(c, _)| if *c == "/json" { "/json " } else { c })
                .collect::<Vec<_>>()
        );
        assert!(complete(&c, "hello").is_empty());
        assert!(complete(&c, "/json x").is_empty());
        let names = ["echo".to_string(), "get-sum".into(), "get-env".into()];
        assert_eq!(complete_name("get", &names), ["get-sum ", "get-env "]);
        assert!(complete_name("x", &names).is_empty());
    }

    #[test]
    fn status_block() {
        let s = Status {
            url: "http://h/sse".into(),
            client_id: Some("abc".into()),
            state: crate::client::State::Open,
            sent: 3,
            acked: 2,
            failed: 0,
            received: 5,
            last_event_id: "5".into(),
            reconnects: 1,
            posts: 5,
            refusals: [(503, 2)].into(),
        };
        let t = status_text(&s);
        assert!(
            t.contains("refusals:      2 of 5 POSTs answered with an error status: 503 \u{d7}2\n"),
            "{t}"
        );
        assert!(t.contains("client id:     abc\n"), "{t}");
        assert!(t.contains("state:         open\n"), "{t}");
        assert!(t.contains("last event id: 5\n"), "{t}");
    }
}
