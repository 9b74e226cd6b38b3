# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ssechan_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_ssechan_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ssechan_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ssechan_using_subcommand
    set -l cmd (__fish_ssechan_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ssechan -n "__fish_ssechan_needs_command" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c ssechan -n "__fish_ssechan_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c ssechan -n "__fish_ssechan_needs_command" -s h -l help -d 'Print help'
complete -c ssechan -n "__fish_ssechan_needs_command" -s V -l version -d 'Print version'
complete -c ssechan -n "__fish_ssechan_needs_command" -f -a "serve" -d 'Host a channel endpoint: pipe stdin/stdout, echo, or run a process per client'
complete -c ssechan -n "__fish_ssechan_needs_command" -f -a "connect" -d 'Connect to a channel (REPL on a terminal, pipe otherwise) or read plain SSE'
complete -c ssechan -n "__fish_ssechan_needs_command" -f -a "bench" -d 'Load-test a channel server and verify exactly-once, in-order delivery'
complete -c ssechan -n "__fish_ssechan_needs_command" -f -a "check" -d 'Run named conformance and proxy checks against a live endpoint, with the fix for each failure'
complete -c ssechan -n "__fish_ssechan_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l listen -d 'Address to listen on: HOST:PORT, a bare PORT (loopback), or :PORT (every interface); port 0 picks a free port' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l path -d 'Path of the channel endpoint (with --mcp: /mcp)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l session-idle -d 'With --mcp: a session with no request in flight and no stream open this long ends (its process too)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-session-streams -d 'With --mcp: requests a session may have in flight at once (each answered as a stream); more get 429' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l keep-alive -d 'Keep a connection this long after its stream ends, so a client resumes transparently (e.g. 30s); off by default (with --mcp: 30s, each stream)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l heartbeat -d 'Idle time before a `: ping` heartbeat comment; 0 disables' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l retry -d 'Reconnect delay told to clients with `retry:` at stream start' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l format -d 'Data format on stdin/stdout' -r -f -a "text\t'One line per message'
json\t'One JSON object per line, with lifecycle events'"
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l allow-origin -d 'Allowed browser origin (repeatable; `*` for any, `null` only if listed). Default: any origin, but with a COMMAND only the server\'s own' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l secret -d 'Put everything (channel, --static files, console) below a secret path, /SECRET/sse: only who is given the URL printed at start can reach anything. SECRET is random unless given here (visible to local users in the process list: prefer SSECHAN_SECRET, needed anyway to give several instances the same one)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l line-breaks -d 'Messages with a line break (\\n or \\r): refused with 400 (the default in text mode and with a COMMAND, where a message is one line), or passed on as they are (the default with --format json and --echo)' -r -f -a "refuse\t'400 with the reason'
pass\t'Taken as it is (a text-mode reader sees several lines)'"
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l metrics -d 'Serve Prometheus metrics at http://ADDR/metrics (same forms as --listen), on an address of their own' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l allow-host -d 'Host name answered besides loopback ones (repeatable; `*` for any). By default a loopback listener answers only loopback names, another also IP addresses (against DNS rebinding)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-message-size -d 'Largest message (POST body); larger ones get 413' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l reorder-window -d 'How far ahead of the next expected messageId a POST may be (else 429)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l reorder-bytes -d 'Bytes of out-of-order messages held per client (else 429)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-queue -d 'Messages queued per client before it is disconnected as a slow consumer' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-queue-bytes -d 'Bytes queued per client before it is disconnected as a slow consumer' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l replay -d 'Recent events kept per client for Last-Event-ID replay' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l replay-bytes -d 'Bytes of recent events kept per client for replay (each event counts 48 bytes more; broadcasts are kept once, for all clients); the kernel send buffer is an eighth of it' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-clients -d 'Clients at once (suspended ones count); more get 503. Default: what the open-file limit allows' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-processes -d 'With COMMAND: processes at once, those still ending included; a client whose process cannot start gets 503. Default: what the open-file limit allows (six descriptors per client)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l spawn-rate -d 'With COMMAND: processes started at most this fast, as N/s, N/m, N/h or N/DURATION (N at once, then one every DURATION/N); more get 503. 0: no limit. EventSource gives up on a 503, so leave room for every client reconnecting at once after a restart' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-connections -d 'TCP connections at once; more get an immediate 503. Default: the open-file limit less a reserve' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-client-id -d 'Longest accepted sseClientId, in bytes' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-incoming -d 'Received messages waiting for stdout (or the process) per client; POSTs wait while full' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-incoming-bytes -d 'Bytes of received messages waiting per client, bodies being read included; likewise' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-incoming-total -d 'Bytes of incoming messages held over all clients; past it POSTs get 503' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l max-closed-ids-bytes -d 'Bytes remembered of closed client ids (next messageId, acknowledged out-of-order messages); the oldest are forgotten first' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l accept-queue -d 'New connections waiting for the server to take them; more get 503' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l request-timeout -d 'Time for a request head, a POST body, and a POST waiting for room' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l write-timeout -d 'A write to a client that makes no progress this long ends its connection' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l redis -d 'Share channels with other `serve` instances through this Redis (redis://HOST:PORT/DB, or rediss:// for TLS): behind a load balancer, any instance serves any client\'s stream and POSTs. A password in the URL given here is visible to local users in the process list: put the URL in SSECHAN_REDIS instead' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l redis-wait -d 'Wait up to this long for Redis at start, instead of failing at once' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l redis-lease -d 'An instance silent in Redis this long is dead: the others close the channels whose application it ran, and resume its streams' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l redis-prefix -d 'Prefix of every key in Redis (separate clusters may share one Redis)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l tls-cert -d 'Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, leaf first; needs --tls-key' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l tls-key -d 'The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l static -d 'Serve the files of DIR on every other path (GET/HEAD; index.html for a directory, no listings, nothing outside DIR)' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l passenv -d 'With COMMAND: pass this variable of the server\'s environment on to the process (repeatable). Otherwise a process gets only PATH and the CGI-style variables (REMOTE_ADDR, QUERY_STRING, HTTP_ORIGIN…)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l kill-grace -d 'With COMMAND: how long a process may run after its client left (its stdin closed) before SIGTERM, and after SIGTERM before SIGKILL' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l mcp -d 'Speak MCP\'s Streamable HTTP instead of package:sse: each session (initialize) gets its own COMMAND, a stdio MCP server; without COMMAND sessions are JSON lines on stdin/stdout (docs/mcp.md)'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l echo -d 'Send every message back to the client that sent it; stdin/stdout carry no data'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l insecure-no-secret -d 'Run a COMMAND on a non-loopback address without --secret: anyone who can reach the address can run it, with your rights'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -l devconsole -d 'A browser opening the channel path gets a console page that connects, shows every message in and out, and sends what you type'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -s q -l quiet -d 'Only errors on stderr'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ssechan -n "__fish_ssechan_using_subcommand serve" -s V -l version -d 'Print version'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l protocol-version -d 'With --mcp: the protocol revision to speak (2025-11-25, 2025-06-18, 2025-03-26 or 2026-07-28); by default the server\'s era is probed and the newest revision both speak is used' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l answer-timeout -d 'With --mcp: after stdin ends, how long the answers still owed may take; past it the run fails, naming them' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l client-id -d 'Client id to use instead of a random UUID' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l debug-key -d 'Use the client id KEY-<uuid>, as package:sse\'s debugKey does' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s H -l header -d 'Extra request header (repeatable), e.g. -H \'Authorization: Bearer x\'' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l format -d 'Output format in pipe mode' -r -f -a "text\t'One line per message'
json\t'One JSON object per line, with lifecycle events'"
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l send -d 'Send this message first (repeatable)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l count -d 'Exit after receiving this many messages (of the --event types, if given)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l wait -d 'After stdin ends and every message is acknowledged, keep receiving this long' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l retry-initial -d 'First reconnect delay; doubles per failure up to --retry-max' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l retry-max -d 'Longest reconnect delay' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l max-retries -d 'Reconnect attempts in a row that may fail before giving up (0: never reconnect); a stream that ends within 1 s without an event counts as failed' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l in-flight -d 'POSTs in flight at once (the server re-orders them)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l timeout -d 'Time limit for connecting and for each POST' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l idle-timeout -d 'Treat the stream as lost (and resume it) after this long without any bytes, heartbeats included, e.g. 45s against `ssechan serve` (15 s heartbeats); off by default and with 0 (TCP keepalive still ends dead connections in about a minute)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l cacert -d 'PEM file of certificates (a CA, or a self-signed server\'s own) to trust in addition to the built-in roots' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s X -l method -d 'With --raw: the request method (default GET, or POST with --data)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s d -l data -d 'With --raw: the request body, sent again on each reconnect; @FILE reads a file, @- stdin' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l last-event-id -d 'Start as if the stream had sent this id: the first GET carries it as Last-Event-ID' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l event -d 'Print only events of this type (repeatable; channel messages are `message`)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l record -d 'Write every event, send and state change to FILE as timestamped JSON lines (the format `bench --scenario` replays)' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l mcp -d 'Speak MCP\'s Streamable HTTP: initialize (either era), then a REPL on a terminal, or one JSON-RPC message per stdin and stdout line; cut streams resume with Last-Event-ID (docs/mcp.md)'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l raw -d 'Read URL as a plain SSE endpoint: no client id, no POSTs'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l retry-first -d 'Retry the first connection too (by default a refused port, an unknown host or a timeout on the first connection fails at once)'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s k -l insecure -d 'Accept any server certificate (like curl -k): encrypted but not authenticated, for test servers only'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l location-trusted -d 'Follow redirects to other hosts with the -H headers too (by default they go to the URL\'s own host only; no Referer is ever sent)'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s L -l location -d 'Follow a redirect of a POST (a message, or --raw -d) to another origin, body included; without it that is an error. GETs follow redirects anywhere, as EventSource does'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l show-comments -d 'Text mode: print comments (e.g. heartbeats) as `:text` lines (JSON always has them as `comment` events)'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -l timestamps -d 'Add the receive time (RFC 3339, UTC) to each output line'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s q -l quiet -d 'Only errors on stderr'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ssechan -n "__fish_ssechan_using_subcommand connect" -s V -l version -d 'Print version'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l mode -d 'What to measure' -r -f -a "echo\t'Send messages and verify every echo'
listen\t'Only read streams; count events, rate and id gaps'"
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l tool -d 'With --mcp: the tool to call (`echo` by default; its answer is then checked to be the message sent)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l args -d 'With --mcp: the tool\'s arguments, a JSON object (the default echo sends `{"message": …}` of --size bytes)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s c -l clients -d 'Concurrent clients (of all shards together)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s m -l messages -d 'Messages per client (listen mode: events per stream, default 1000); without it and without --duration, echo mode runs for 10s' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s d -l duration -d 'Run for this long instead of a message count' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s r -l rate -d 'Open loop: this many messages (listen with -X/--data: new streams) per second in total (default: closed loop)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l window -d 'Messages each client keeps in flight in closed loop' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s s -l size -d 'Payload size in bytes (at least the verification header)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l drop-every -d 'Chaos: end each client\'s stream at random moments around this period; clients resume' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s X -l request -d 'Listen --raw: each stream is the answer to a request of this method (e.g. POST, as LLM-style APIs stream); a stream that ends is a completed request' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l data -d 'Listen --raw: the request body (POST unless -X says otherwise), `@FILE` to read it from a file, `@-` from stdin; sent as JSON unless -H gives a Content-Type' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l scenario -d 'Replay a recorded session (`connect --record FILE`) with each client; URL defaults to the recorded one' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l speed -d '--scenario: play the recorded gaps this many times faster' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l expect -d '--scenario: what must match the recording: the messages in order (a deterministic server), their count, or nothing' -r -f -a "order\t'The recorded messages, in the recorded order'
count\t'As many messages as were recorded'
none\t'Nothing: the recording is only a load'"
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l streams -d 'Listen with -X/--data, without --duration: requests per client' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s H -l header -d 'Extra request header (repeatable)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l max-lost -d 'Fail when more messages than this are lost' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l max-duplicated -d 'Fail when more messages than this are duplicated' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l max-refusals -d 'Fail when more POSTs than this were answered with an error status (retried or not): a count, or a share of the POSTs (`0.5%`)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l max-p99 -d 'Fail when the p99 round trip (listen: time to first event) is slower than this' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l min-throughput -d 'Fail below this many verified round trips (or, listen mode, events) per second' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l min-events -d 'Listen mode: fail below this many events in total [default: 1]' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l json -d 'Write the report as JSON to FILE (`-` for stdout)' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l junit -d 'Write the checks as JUnit XML to FILE (`-` for stdout), for CI test reports' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l html -d 'Write the report as one self-contained HTML page to FILE: charts of the run second by second, the checks, the command line and machine' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l shard -d 'Run the I-th of N equal slices of the workload (1-based: clients and rate divided, client ids disjoint); `N` alone takes I from JOB_COMPLETION_INDEX (0-based, as a Kubernetes Indexed Job sets it)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l start-at -d 'Start the load at this time (RFC 3339, e.g. 2026-12-02T10:00:00Z) or this long after start (+5s), so that shards started apart run together' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l connect-timeout -d 'Time limit for connecting each client and for each POST\'s answer (at least 10ms)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l cacert -d 'https: PEM file of certificates (a CA, or a self-signed server\'s own) to trust in addition to the built-in roots' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l threads -d 'Client threads; 0 uses half the cores, leaving the rest to a local server' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l dashboard -d 'Serve a live view of the run at http://ADDR/ (same forms as serve --listen: a bare port is on loopback): the HTML report, updated once a second by an event stream' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l keep-alive -d 'Keep-alive of the embedded server (without URL)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l drain -d 'How long to wait for an echo (closed loop: before giving a message up; at the end: before counting it lost; at start: before saying the server does not echo) and, in listen mode without --duration, for a stream\'s next event (at least 10ms)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l mcp -d 'URL is an MCP Streamable HTTP endpoint: each client is a session calling a tool (docs/mcp.md)'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -l raw -d 'Listen mode: URL is a plain SSE endpoint (no client id)'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s k -l insecure -d 'https: accept any server certificate (like curl -k): encrypted but not authenticated, for test servers only'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s q -l quiet -d 'Only errors on stderr'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -s V -l version -d 'Print version'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and not __fish_seen_subcommand_from merge" -a "merge" -d 'Merge the JSON reports of sharded runs into one (counts summed, percentiles from the merged histograms) and apply the gates given here'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l max-lost -d 'Fail when more messages than this are lost' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l max-duplicated -d 'Fail when more messages than this are duplicated' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l max-refusals -d 'Fail when more POSTs than this were answered with an error status (retried or not): a count, or a share of the POSTs (`0.5%`)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l max-p99 -d 'Fail when the p99 round trip (listen: time to first event) is slower than this' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l min-throughput -d 'Fail below this many verified round trips (or, listen mode, events) per second' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l min-events -d 'Listen mode: fail below this many events in total [default: 1]' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l json -d 'Write the report as JSON to FILE (`-` for stdout)' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l junit -d 'Write the checks as JUnit XML to FILE (`-` for stdout), for CI test reports' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -l html -d 'Write the report as one self-contained HTML page to FILE: charts of the run second by second, the checks, the command line and machine' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -s q -l quiet -d 'Only errors on stderr'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -s h -l help -d 'Print help'
complete -c ssechan -n "__fish_ssechan_using_subcommand bench; and __fish_seen_subcommand_from merge" -s V -l version -d 'Print version'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l only -d 'Run only the checks matching PATTERN: an id, a group (`resume`) or a glob (`post.*`); repeatable, or comma-separated' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l skip -d 'Leave out the checks matching PATTERN (as for --only)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l format -d 'Output: a line per check, or a JSON object per line' -r -f -a "text\t'One line per message'
json\t'One JSON object per line, with lifecycle events'"
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l junit -d 'Also write the verdicts as JUnit XML to FILE, for CI' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l wait -d 'How long to wait for each expected echo, event or stream end' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l idle-probe -d 'Hold an idle stream open this long to find a proxy that cuts quiet streams; 0 skips the probe' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l heartbeat-within -d 'Longest wait for a heartbeat comment on an idle channel stream' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l timeout -d 'Time limit for connecting and for each request\'s answer' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l origin -d 'The foreign origin of the CORS checks' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l streams -d 'Streams opened at once by path.streams (browsers open at most 6 per origin over HTTP/1.1)' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l message-limit -d 'The server\'s message size limit: post.oversize sends one byte more' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -s H -l header -d 'Extra request header (repeatable), e.g. -H \'Authorization: Bearer x\'' -r
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l cacert -d 'PEM file of certificates to trust in addition to the built-in roots' -r -F
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l raw -d 'URL is a plain SSE endpoint: run the raw and path checks, not the channel ones'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l mcp -d 'URL is an MCP Streamable HTTP endpoint: run the MCP checks (docs/mcp.md)'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -l list -d 'List the checks (after --raw, --only and --skip) instead of running them'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -s k -l insecure -d 'Accept any server certificate (like curl -k)'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -s q -l quiet -d 'Only errors on stderr'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ssechan -n "__fish_ssechan_using_subcommand check" -s V -l version -d 'Print version'
complete -c ssechan -n "__fish_ssechan_using_subcommand help; and not __fish_seen_subcommand_from serve connect bench check help" -f -a "serve" -d 'Host a channel endpoint: pipe stdin/stdout, echo, or run a process per client'
complete -c ssechan -n "__fish_ssechan_using_subcommand help; and not __fish_seen_subcommand_from serve connect bench check help" -f -a "connect" -d 'Connect to a channel (REPL on a terminal, pipe otherwise) or read plain SSE'
complete -c ssechan -n "__fish_ssechan_using_subcommand help; and not __fish_seen_subcommand_from serve connect bench check help" -f -a "bench" -d 'Load-test a channel server and verify exactly-once, in-order delivery'
complete -c ssechan -n "__fish_ssechan_using_subcommand help; and not __fish_seen_subcommand_from serve connect bench check help" -f -a "check" -d 'Run named conformance and proxy checks against a live endpoint, with the fix for each failure'
complete -c ssechan -n "__fish_ssechan_using_subcommand help; and not __fish_seen_subcommand_from serve connect bench check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ssechan -n "__fish_ssechan_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "merge" -d 'Merge the JSON reports of sharded runs into one (counts summed, percentiles from the merged histograms) and apply the gates given here'
