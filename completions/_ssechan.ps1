
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'ssechan' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'ssechan'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'ssechan' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Host a channel endpoint: pipe stdin/stdout, echo, or run a process per client')
            [CompletionResult]::new('connect', 'connect', [CompletionResultType]::ParameterValue, 'Connect to a channel (REPL on a terminal, pipe otherwise) or read plain SSE')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load-test a channel server and verify exactly-once, in-order delivery')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Run named conformance and proxy checks against a live endpoint, with the fix for each failure')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ssechan;serve' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on: HOST:PORT, a bare PORT (loopback), or :PORT (every interface); port 0 picks a free port')
            [CompletionResult]::new('--path', '--path', [CompletionResultType]::ParameterName, 'Path of the channel endpoint (with --mcp: /mcp)')
            [CompletionResult]::new('--session-idle', '--session-idle', [CompletionResultType]::ParameterName, 'With --mcp: a session with no request in flight and no stream open this long ends (its process too)')
            [CompletionResult]::new('--max-session-streams', '--max-session-streams', [CompletionResultType]::ParameterName, 'With --mcp: requests a session may have in flight at once (each answered as a stream); more get 429')
            [CompletionResult]::new('--keep-alive', '--keep-alive', [CompletionResultType]::ParameterName, 'Keep a connection this long after its stream ends, so a client resumes transparently (e.g. 30s); off by default (with --mcp: 30s, each stream)')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'Idle time before a `: ping` heartbeat comment; 0 disables')
            [CompletionResult]::new('--retry', '--retry', [CompletionResultType]::ParameterName, 'Reconnect delay told to clients with `retry:` at stream start')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Data format on stdin/stdout')
            [CompletionResult]::new('--allow-origin', '--allow-origin', [CompletionResultType]::ParameterName, 'Allowed browser origin (repeatable; `*` for any, `null` only if listed). Default: any origin, but with a COMMAND only the server''s own')
            [CompletionResult]::new('--secret', '--secret', [CompletionResultType]::ParameterName, 'Put everything (channel, --static files, console) below a secret path, /SECRET/sse: only who is given the URL printed at start can reach anything. SECRET is random unless given here (visible to local users in the process list: prefer SSECHAN_SECRET, needed anyway to give several instances the same one)')
            [CompletionResult]::new('--line-breaks', '--line-breaks', [CompletionResultType]::ParameterName, 'Messages with a line break (\n or \r): refused with 400 (the default in text mode and with a COMMAND, where a message is one line), or passed on as they are (the default with --format json and --echo)')
            [CompletionResult]::new('--metrics', '--metrics', [CompletionResultType]::ParameterName, 'Serve Prometheus metrics at http://ADDR/metrics (same forms as --listen), on an address of their own')
            [CompletionResult]::new('--allow-host', '--allow-host', [CompletionResultType]::ParameterName, 'Host name answered besides loopback ones (repeatable; `*` for any). By default a loopback listener answers only loopback names, another also IP addresses (against DNS rebinding)')
            [CompletionResult]::new('--max-message-size', '--max-message-size', [CompletionResultType]::ParameterName, 'Largest message (POST body); larger ones get 413')
            [CompletionResult]::new('--reorder-window', '--reorder-window', [CompletionResultType]::ParameterName, 'How far ahead of the next expected messageId a POST may be (else 429)')
            [CompletionResult]::new('--reorder-bytes', '--reorder-bytes', [CompletionResultType]::ParameterName, 'Bytes of out-of-order messages held per client (else 429)')
            [CompletionResult]::new('--max-queue', '--max-queue', [CompletionResultType]::ParameterName, 'Messages queued per client before it is disconnected as a slow consumer')
            [CompletionResult]::new('--max-queue-bytes', '--max-queue-bytes', [CompletionResultType]::ParameterName, 'Bytes queued per client before it is disconnected as a slow consumer')
            [CompletionResult]::new('--replay', '--replay', [CompletionResultType]::ParameterName, 'Recent events kept per client for Last-Event-ID replay')
            [CompletionResult]::new('--replay-bytes', '--replay-bytes', [CompletionResultType]::ParameterName, 'Bytes of recent events kept per client for replay (each event counts 48 bytes more; broadcasts are kept once, for all clients); the kernel send buffer is an eighth of it')
            [CompletionResult]::new('--max-clients', '--max-clients', [CompletionResultType]::ParameterName, 'Clients at once (suspended ones count); more get 503. Default: what the open-file limit allows')
            [CompletionResult]::new('--max-processes', '--max-processes', [CompletionResultType]::ParameterName, 'With COMMAND: processes at once, those still ending included; a client whose process cannot start gets 503. Default: what the open-file limit allows (six descriptors per client)')
            [CompletionResult]::new('--spawn-rate', '--spawn-rate', [CompletionResultType]::ParameterName, 'With COMMAND: processes started at most this fast, as N/s, N/m, N/h or N/DURATION (N at once, then one every DURATION/N); more get 503. 0: no limit. EventSource gives up on a 503, so leave room for every client reconnecting at once after a restart')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'TCP connections at once; more get an immediate 503. Default: the open-file limit less a reserve')
            [CompletionResult]::new('--max-client-id', '--max-client-id', [CompletionResultType]::ParameterName, 'Longest accepted sseClientId, in bytes')
            [CompletionResult]::new('--max-incoming', '--max-incoming', [CompletionResultType]::ParameterName, 'Received messages waiting for stdout (or the process) per client; POSTs wait while full')
            [CompletionResult]::new('--max-incoming-bytes', '--max-incoming-bytes', [CompletionResultType]::ParameterName, 'Bytes of received messages waiting per client, bodies being read included; likewise')
            [CompletionResult]::new('--max-incoming-total', '--max-incoming-total', [CompletionResultType]::ParameterName, 'Bytes of incoming messages held over all clients; past it POSTs get 503')
            [CompletionResult]::new('--max-closed-ids-bytes', '--max-closed-ids-bytes', [CompletionResultType]::ParameterName, 'Bytes remembered of closed client ids (next messageId, acknowledged out-of-order messages); the oldest are forgotten first')
            [CompletionResult]::new('--accept-queue', '--accept-queue', [CompletionResultType]::ParameterName, 'New connections waiting for the server to take them; more get 503')
            [CompletionResult]::new('--request-timeout', '--request-timeout', [CompletionResultType]::ParameterName, 'Time for a request head, a POST body, and a POST waiting for room')
            [CompletionResult]::new('--write-timeout', '--write-timeout', [CompletionResultType]::ParameterName, 'A write to a client that makes no progress this long ends its connection')
            [CompletionResult]::new('--redis', '--redis', [CompletionResultType]::ParameterName, 'Share channels with other `serve` instances through this Redis (redis://HOST:PORT/DB, or rediss:// for TLS): behind a load balancer, any instance serves any client''s stream and POSTs. A password in the URL given here is visible to local users in the process list: put the URL in SSECHAN_REDIS instead')
            [CompletionResult]::new('--redis-wait', '--redis-wait', [CompletionResultType]::ParameterName, 'Wait up to this long for Redis at start, instead of failing at once')
            [CompletionResult]::new('--redis-lease', '--redis-lease', [CompletionResultType]::ParameterName, 'An instance silent in Redis this long is dead: the others close the channels whose application it ran, and resume its streams')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'Prefix of every key in Redis (separate clusters may share one Redis)')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, leaf first; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert')
            [CompletionResult]::new('--static', '--static', [CompletionResultType]::ParameterName, 'Serve the files of DIR on every other path (GET/HEAD; index.html for a directory, no listings, nothing outside DIR)')
            [CompletionResult]::new('--passenv', '--passenv', [CompletionResultType]::ParameterName, 'With COMMAND: pass this variable of the server''s environment on to the process (repeatable). Otherwise a process gets only PATH and the CGI-style variables (REMOTE_ADDR, QUERY_STRING, HTTP_ORIGIN…)')
            [CompletionResult]::new('--kill-grace', '--kill-grace', [CompletionResultType]::ParameterName, 'With COMMAND: how long a process may run after its client left (its stdin closed) before SIGTERM, and after SIGTERM before SIGKILL')
            [CompletionResult]::new('--mcp', '--mcp', [CompletionResultType]::ParameterName, 'Speak MCP''s Streamable HTTP instead of package:sse: each session (initialize) gets its own COMMAND, a stdio MCP server; without COMMAND sessions are JSON lines on stdin/stdout (docs/mcp.md)')
            [CompletionResult]::new('--echo', '--echo', [CompletionResultType]::ParameterName, 'Send every message back to the client that sent it; stdin/stdout carry no data')
            [CompletionResult]::new('--insecure-no-secret', '--insecure-no-secret', [CompletionResultType]::ParameterName, 'Run a COMMAND on a non-loopback address without --secret: anyone who can reach the address can run it, with your rights')
            [CompletionResult]::new('--devconsole', '--devconsole', [CompletionResultType]::ParameterName, 'A browser opening the channel path gets a console page that connects, shows every message in and out, and sends what you type')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ssechan;connect' {
            [CompletionResult]::new('--protocol-version', '--protocol-version', [CompletionResultType]::ParameterName, 'With --mcp: the protocol revision to speak (2025-11-25, 2025-06-18, 2025-03-26 or 2026-07-28); by default the server''s era is probed and the newest revision both speak is used')
            [CompletionResult]::new('--answer-timeout', '--answer-timeout', [CompletionResultType]::ParameterName, 'With --mcp: after stdin ends, how long the answers still owed may take; past it the run fails, naming them')
            [CompletionResult]::new('--client-id', '--client-id', [CompletionResultType]::ParameterName, 'Client id to use instead of a random UUID')
            [CompletionResult]::new('--debug-key', '--debug-key', [CompletionResultType]::ParameterName, 'Use the client id KEY-<uuid>, as package:sse''s debugKey does')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'Extra request header (repeatable), e.g. -H ''Authorization: Bearer x''')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'Extra request header (repeatable), e.g. -H ''Authorization: Bearer x''')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format in pipe mode')
            [CompletionResult]::new('--send', '--send', [CompletionResultType]::ParameterName, 'Send this message first (repeatable)')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Exit after receiving this many messages (of the --event types, if given)')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'After stdin ends and every message is acknowledged, keep receiving this long')
            [CompletionResult]::new('--retry-initial', '--retry-initial', [CompletionResultType]::ParameterName, 'First reconnect delay; doubles per failure up to --retry-max')
            [CompletionResult]::new('--retry-max', '--retry-max', [CompletionResultType]::ParameterName, 'Longest reconnect delay')
            [CompletionResult]::new('--max-retries', '--max-retries', [CompletionResultType]::ParameterName, 'Reconnect attempts in a row that may fail before giving up (0: never reconnect); a stream that ends within 1 s without an event counts as failed')
            [CompletionResult]::new('--in-flight', '--in-flight', [CompletionResultType]::ParameterName, 'POSTs in flight at once (the server re-orders them)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Time limit for connecting and for each POST')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Treat the stream as lost (and resume it) after this long without any bytes, heartbeats included, e.g. 45s against `ssechan serve` (15 s heartbeats); off by default and with 0 (TCP keepalive still ends dead connections in about a minute)')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of certificates (a CA, or a self-signed server''s own) to trust in addition to the built-in roots')
            [CompletionResult]::new('-X', '-X ', [CompletionResultType]::ParameterName, 'With --raw: the request method (default GET, or POST with --data)')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'With --raw: the request method (default GET, or POST with --data)')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'With --raw: the request body, sent again on each reconnect; @FILE reads a file, @- stdin')
            [CompletionResult]::new('--data', '--data', [CompletionResultType]::ParameterName, 'With --raw: the request body, sent again on each reconnect; @FILE reads a file, @- stdin')
            [CompletionResult]::new('--last-event-id', '--last-event-id', [CompletionResultType]::ParameterName, 'Start as if the stream had sent this id: the first GET carries it as Last-Event-ID')
            [CompletionResult]::new('--event', '--event', [CompletionResultType]::ParameterName, 'Print only events of this type (repeatable; channel messages are `message`)')
            [CompletionResult]::new('--record', '--record', [CompletionResultType]::ParameterName, 'Write every event, send and state change to FILE as timestamped JSON lines (the format `bench --scenario` replays)')
            [CompletionResult]::new('--mcp', '--mcp', [CompletionResultType]::ParameterName, 'Speak MCP''s Streamable HTTP: initialize (either era), then a REPL on a terminal, or one JSON-RPC message per stdin and stdout line; cut streams resume with Last-Event-ID (docs/mcp.md)')
            [CompletionResult]::new('--raw', '--raw', [CompletionResultType]::ParameterName, 'Read URL as a plain SSE endpoint: no client id, no POSTs')
            [CompletionResult]::new('--retry-first', '--retry-first', [CompletionResultType]::ParameterName, 'Retry the first connection too (by default a refused port, an unknown host or a timeout on the first connection fails at once)')
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'Accept any server certificate (like curl -k): encrypted but not authenticated, for test servers only')
            [CompletionResult]::new('--insecure', '--insecure', [CompletionResultType]::ParameterName, 'Accept any server certificate (like curl -k): encrypted but not authenticated, for test servers only')
            [CompletionResult]::new('--location-trusted', '--location-trusted', [CompletionResultType]::ParameterName, 'Follow redirects to other hosts with the -H headers too (by default they go to the URL''s own host only; no Referer is ever sent)')
            [CompletionResult]::new('-L', '-L ', [CompletionResultType]::ParameterName, 'Follow a redirect of a POST (a message, or --raw -d) to another origin, body included; without it that is an error. GETs follow redirects anywhere, as EventSource does')
            [CompletionResult]::new('--location', '--location', [CompletionResultType]::ParameterName, 'Follow a redirect of a POST (a message, or --raw -d) to another origin, body included; without it that is an error. GETs follow redirects anywhere, as EventSource does')
            [CompletionResult]::new('--show-comments', '--show-comments', [CompletionResultType]::ParameterName, 'Text mode: print comments (e.g. heartbeats) as `:text` lines (JSON always has them as `comment` events)')
            [CompletionResult]::new('--timestamps', '--timestamps', [CompletionResultType]::ParameterName, 'Add the receive time (RFC 3339, UTC) to each output line')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ssechan;bench' {
            [CompletionResult]::new('--mode', '--mode', [CompletionResultType]::ParameterName, 'What to measure')
            [CompletionResult]::new('--tool', '--tool', [CompletionResultType]::ParameterName, 'With --mcp: the tool to call (`echo` by default; its answer is then checked to be the message sent)')
            [CompletionResult]::new('--args', '--args', [CompletionResultType]::ParameterName, 'With --mcp: the tool''s arguments, a JSON object (the default echo sends `{"message": …}` of --size bytes)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Concurrent clients (of all shards together)')
            [CompletionResult]::new('--clients', '--clients', [CompletionResultType]::ParameterName, 'Concurrent clients (of all shards together)')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Messages per client (listen mode: events per stream, default 1000); without it and without --duration, echo mode runs for 10s')
            [CompletionResult]::new('--messages', '--messages', [CompletionResultType]::ParameterName, 'Messages per client (listen mode: events per stream, default 1000); without it and without --duration, echo mode runs for 10s')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Run for this long instead of a message count')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Run for this long instead of a message count')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Open loop: this many messages (listen with -X/--data: new streams) per second in total (default: closed loop)')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Open loop: this many messages (listen with -X/--data: new streams) per second in total (default: closed loop)')
            [CompletionResult]::new('--window', '--window', [CompletionResultType]::ParameterName, 'Messages each client keeps in flight in closed loop')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Payload size in bytes (at least the verification header)')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'Payload size in bytes (at least the verification header)')
            [CompletionResult]::new('--drop-every', '--drop-every', [CompletionResultType]::ParameterName, 'Chaos: end each client''s stream at random moments around this period; clients resume')
            [CompletionResult]::new('-X', '-X ', [CompletionResultType]::ParameterName, 'Listen --raw: each stream is the answer to a request of this method (e.g. POST, as LLM-style APIs stream); a stream that ends is a completed request')
            [CompletionResult]::new('--request', '--request', [CompletionResultType]::ParameterName, 'Listen --raw: each stream is the answer to a request of this method (e.g. POST, as LLM-style APIs stream); a stream that ends is a completed request')
            [CompletionResult]::new('--data', '--data', [CompletionResultType]::ParameterName, 'Listen --raw: the request body (POST unless -X says otherwise), `@FILE` to read it from a file, `@-` from stdin; sent as JSON unless -H gives a Content-Type')
            [CompletionResult]::new('--scenario', '--scenario', [CompletionResultType]::ParameterName, 'Replay a recorded session (`connect --record FILE`) with each client; URL defaults to the recorded one')
            [CompletionResult]::new('--speed', '--speed', [CompletionResultType]::ParameterName, '--scenario: play the recorded gaps this many times faster')
            [CompletionResult]::new('--expect', '--expect', [CompletionResultType]::ParameterName, '--scenario: what must match the recording: the messages in order (a deterministic server), their count, or nothing')
            [CompletionResult]::new('--streams', '--streams', [CompletionResultType]::ParameterName, 'Listen with -X/--data, without --duration: requests per client')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'Extra request header (repeatable)')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'Extra request header (repeatable)')
            [CompletionResult]::new('--max-lost', '--max-lost', [CompletionResultType]::ParameterName, 'Fail when more messages than this are lost')
            [CompletionResult]::new('--max-duplicated', '--max-duplicated', [CompletionResultType]::ParameterName, 'Fail when more messages than this are duplicated')
            [CompletionResult]::new('--max-refusals', '--max-refusals', [CompletionResultType]::ParameterName, 'Fail when more POSTs than this were answered with an error status (retried or not): a count, or a share of the POSTs (`0.5%`)')
            [CompletionResult]::new('--max-p99', '--max-p99', [CompletionResultType]::ParameterName, 'Fail when the p99 round trip (listen: time to first event) is slower than this')
            [CompletionResult]::new('--min-throughput', '--min-throughput', [CompletionResultType]::ParameterName, 'Fail below this many verified round trips (or, listen mode, events) per second')
            [CompletionResult]::new('--min-events', '--min-events', [CompletionResultType]::ParameterName, 'Listen mode: fail below this many events in total [default: 1]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Write the report as JSON to FILE (`-` for stdout)')
            [CompletionResult]::new('--junit', '--junit', [CompletionResultType]::ParameterName, 'Write the checks as JUnit XML to FILE (`-` for stdout), for CI test reports')
            [CompletionResult]::new('--html', '--html', [CompletionResultType]::ParameterName, 'Write the report as one self-contained HTML page to FILE: charts of the run second by second, the checks, the command line and machine')
            [CompletionResult]::new('--shard', '--shard', [CompletionResultType]::ParameterName, 'Run the I-th of N equal slices of the workload (1-based: clients and rate divided, client ids disjoint); `N` alone takes I from JOB_COMPLETION_INDEX (0-based, as a Kubernetes Indexed Job sets it)')
            [CompletionResult]::new('--start-at', '--start-at', [CompletionResultType]::ParameterName, 'Start the load at this time (RFC 3339, e.g. 2026-12-02T10:00:00Z) or this long after start (+5s), so that shards started apart run together')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Time limit for connecting each client and for each POST''s answer (at least 10ms)')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'https: PEM file of certificates (a CA, or a self-signed server''s own) to trust in addition to the built-in roots')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'Client threads; 0 uses half the cores, leaving the rest to a local server')
            [CompletionResult]::new('--dashboard', '--dashboard', [CompletionResultType]::ParameterName, 'Serve a live view of the run at http://ADDR/ (same forms as serve --listen: a bare port is on loopback): the HTML report, updated once a second by an event stream')
            [CompletionResult]::new('--keep-alive', '--keep-alive', [CompletionResultType]::ParameterName, 'Keep-alive of the embedded server (without URL)')
            [CompletionResult]::new('--drain', '--drain', [CompletionResultType]::ParameterName, 'How long to wait for an echo (closed loop: before giving a message up; at the end: before counting it lost; at start: before saying the server does not echo) and, in listen mode without --duration, for a stream''s next event (at least 10ms)')
            [CompletionResult]::new('--mcp', '--mcp', [CompletionResultType]::ParameterName, 'URL is an MCP Streamable HTTP endpoint: each client is a session calling a tool (docs/mcp.md)')
            [CompletionResult]::new('--raw', '--raw', [CompletionResultType]::ParameterName, 'Listen mode: URL is a plain SSE endpoint (no client id)')
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'https: accept any server certificate (like curl -k): encrypted but not authenticated, for test servers only')
            [CompletionResult]::new('--insecure', '--insecure', [CompletionResultType]::ParameterName, 'https: accept any server certificate (like curl -k): encrypted but not authenticated, for test servers only')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('merge', 'merge', [CompletionResultType]::ParameterValue, 'Merge the JSON reports of sharded runs into one (counts summed, percentiles from the merged histograms) and apply the gates given here')
            break
        }
        'ssechan;bench;merge' {
            [CompletionResult]::new('--max-lost', '--max-lost', [CompletionResultType]::ParameterName, 'Fail when more messages than this are lost')
            [CompletionResult]::new('--max-duplicated', '--max-duplicated', [CompletionResultType]::ParameterName, 'Fail when more messages than this are duplicated')
            [CompletionResult]::new('--max-refusals', '--max-refusals', [CompletionResultType]::ParameterName, 'Fail when more POSTs than this were answered with an error status (retried or not): a count, or a share of the POSTs (`0.5%`)')
            [CompletionResult]::new('--max-p99', '--max-p99', [CompletionResultType]::ParameterName, 'Fail when the p99 round trip (listen: time to first event) is slower than this')
            [CompletionResult]::new('--min-throughput', '--min-throughput', [CompletionResultType]::ParameterName, 'Fail below this many verified round trips (or, listen mode, events) per second')
            [CompletionResult]::new('--min-events', '--min-events', [CompletionResultType]::ParameterName, 'Listen mode: fail below this many events in total [default: 1]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Write the report as JSON to FILE (`-` for stdout)')
            [CompletionResult]::new('--junit', '--junit', [CompletionResultType]::ParameterName, 'Write the checks as JUnit XML to FILE (`-` for stdout), for CI test reports')
            [CompletionResult]::new('--html', '--html', [CompletionResultType]::ParameterName, 'Write the report as one self-contained HTML page to FILE: charts of the run second by second, the checks, the command line and machine')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ssechan;check' {
            [CompletionResult]::new('--only', '--only', [CompletionResultType]::ParameterName, 'Run only the checks matching PATTERN: an id, a group (`resume`) or a glob (`post.*`); repeatable, or comma-separated')
            [CompletionResult]::new('--skip', '--skip', [CompletionResultType]::ParameterName, 'Leave out the checks matching PATTERN (as for --only)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output: a line per check, or a JSON object per line')
            [CompletionResult]::new('--junit', '--junit', [CompletionResultType]::ParameterName, 'Also write the verdicts as JUnit XML to FILE, for CI')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'How long to wait for each expected echo, event or stream end')
            [CompletionResult]::new('--idle-probe', '--idle-probe', [CompletionResultType]::ParameterName, 'Hold an idle stream open this long to find a proxy that cuts quiet streams; 0 skips the probe')
            [CompletionResult]::new('--heartbeat-within', '--heartbeat-within', [CompletionResultType]::ParameterName, 'Longest wait for a heartbeat comment on an idle channel stream')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Time limit for connecting and for each request''s answer')
            [CompletionResult]::new('--origin', '--origin', [CompletionResultType]::ParameterName, 'The foreign origin of the CORS checks')
            [CompletionResult]::new('--streams', '--streams', [CompletionResultType]::ParameterName, 'Streams opened at once by path.streams (browsers open at most 6 per origin over HTTP/1.1)')
            [CompletionResult]::new('--message-limit', '--message-limit', [CompletionResultType]::ParameterName, 'The server''s message size limit: post.oversize sends one byte more')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'Extra request header (repeatable), e.g. -H ''Authorization: Bearer x''')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'Extra request header (repeatable), e.g. -H ''Authorization: Bearer x''')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of certificates to trust in addition to the built-in roots')
            [CompletionResult]::new('--raw', '--raw', [CompletionResultType]::ParameterName, 'URL is a plain SSE endpoint: run the raw and path checks, not the channel ones')
            [CompletionResult]::new('--mcp', '--mcp', [CompletionResultType]::ParameterName, 'URL is an MCP Streamable HTTP endpoint: run the MCP checks (docs/mcp.md)')
            [CompletionResult]::new('--list', '--list', [CompletionResultType]::ParameterName, 'List the checks (after --raw, --only and --skip) instead of running them')
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'Accept any server certificate (like curl -k)')
            [CompletionResult]::new('--insecure', '--insecure', [CompletionResultType]::ParameterName, 'Accept any server certificate (like curl -k)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'ssechan;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Host a channel endpoint: pipe stdin/stdout, echo, or run a process per client')
            [CompletionResult]::new('connect', 'connect', [CompletionResultType]::ParameterValue, 'Connect to a channel (REPL on a terminal, pipe otherwise) or read plain SSE')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load-test a channel server and verify exactly-once, in-order delivery')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Run named conformance and proxy checks against a live endpoint, with the fix for each failure')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ssechan;help;serve' {
            break
        }
        'ssechan;help;connect' {
            break
        }
        'ssechan;help;bench' {
            [CompletionResult]::new('merge', 'merge', [CompletionResultType]::ParameterValue, 'Merge the JSON reports of sharded runs into one (counts summed, percentiles from the merged histograms) and apply the gates given here')
            break
        }
        'ssechan;help;bench;merge' {
            break
        }
        'ssechan;help;check' {
            break
        }
        'ssechan;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
