-- POST ingest for wrk: every request POSTs the next messageId of one client
-- id (0, 1, 2, ... over all connections), as package:sse's browser client
-- does, and the answers are counted by status. Attach the client's stream
-- first (a server only knows clients with a stream), e.g.
--   curl -sN 'http://127.0.0.1:8080/sse?sseClientId=c0' >/dev/null &
--   wrk -t1 -c50 -d5s -s scripts/post_ingest.lua http://127.0.0.1:8080/sse -- c0
-- Arguments after `--`: the client id (default c0). With -tN the threads
-- take ids in turn (thread i posts i, i+N, i+2N, ...).
-- At the end it prints `posts STATUS COUNT` lines and `posts sent N`
-- (the ids handed out): compare the 2xx count with what the server
-- delivered to its application (ssechan_messages_in_total).

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
  -- Every thread learns the final count: the last setup call sets it.
  for _, t in ipairs(threads) do
    t:set("stride", #threads)
  end
end

function init(args)
  local client = args[1] or "c0"
  local sep = string.find(wrk.path, "?", 1, true) and "&" or "?"
  prefix = wrk.path .. sep .. "sseClientId=" .. client .. "&messageId="
  headers = { ["Content-Type"] = "text/plain;charset=UTF-8" }
  -- wrk 4 calls request() once on the first thread to check it before
  -- the run and throws that request away: that call takes no id.
  n = index == 0 and -1 or 0
  counts = {}
end

function request()
  local id = n * stride + index
  n = n + 1
  return wrk.format("POST", prefix .. id, headers, '"m' .. id .. '"')
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, sent = {}, 0
  for _, t in ipairs(threads) do
    sent = sent + t:get("n")
    for status, count in pairs(t:get("counts")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local statuses = {}
  for status in pairs(total) do
    table.insert(statuses, status)
  end
  table.sort(statuses)
  for _, status in ipairs(statuses) do
    io.write(string.format("posts %d %d\n", status, total[status]))
  end
  io.write(string.format("posts sent %d\n", sent))
end
