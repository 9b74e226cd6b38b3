#!lua name=__LIBRARY__
-- ssechan's channels in Redis, as a function library (loaded once by each
-- instance, `FCALL __LIBRARY__ 0 ARGS`): every change of a channel's state
-- is one call, so it is atomic whichever instance makes it.
--
-- ARGS[1] key prefix, ARGS[2] operation, ARGS[3] the calling instance,
-- ARGS[4] the instance lease (ms), ARGS[5] how long a closed id's next
-- messageId is remembered (ms), ARGS[6] the caller's bounds (see
-- `bounds`); the operation's own arguments follow.
--
-- Keys (P = prefix; a client id goes last, after a prefix of its own, so
-- no id can name another id's key):
--   P m:<client id>   hash: the channel (fields below)
--   P q:<client id>   hash: out-of-order messages by messageId
--   P o:<serial>      stream: the channel's events, entry id 0-<event id>,
--                     fields d (the encoded data) and c (bytes through it)
--   P i:<instance>    stream: notices for an instance (see notify)
--   P h:<instance>    set: client ids homed there
--   P s:<instance>    set: client ids whose stream is attached there
--   P inst            hash: instance -> last lease refresh (ms, Redis time)
--   P live            set: client ids open or suspended
--   P pk              set: instances that read their notices packed (see
--                     send_notices)
--   P serial          counter of channel serials (one per incarnation)
--   P b, P bseq       stream and counter of broadcasts
--   P held            bytes of out-of-order messages of open channels
--                     (the weights of their qb), bounded by the incoming
--                     total of the memory store (--max-incoming-total)
--   P closed          sorted set: client ids remembered after their close,
--                     by the time of the close (ms, Redis time)
--   P closedw, P closedb  hash: what each remembered id weighs (its id,
--                     its out-of-order messages, a fixed overhead), and the
--                     sum, bounded by --max-closed-ids-bytes
--
-- Every change of a qb goes through held_by, every remembered id through
-- remember/unremember: the budgets change in the same call as the data.
--
-- Channel fields: home (instance of its application), ser (serial), tok
-- (token of the attached stream, '' none), hold (its instance), ph (o
-- open, s suspended, c closing, '' closed: only ni and qb remembered), ep
-- (suspension epoch), rs (closing reason), ne (next event id), cum (data
-- bytes through ne-1), sent/sentc (handed to a stream: id, bytes), lost,
-- gapr (lost ids reported through), fid/fcb (oldest event kept in the
-- event stream, and data bytes before it), ni (next messageId), qb
-- (out-of-order bytes), fresh (nothing delivered, no first wait yet), fw
-- (first wait armed), pin/pinb (messages on their way to the
-- application), gone (the application left), hseq (last home operation
-- applied), ka (keep-alive ms).
--
-- Close reasons: c closed by server, l closed by client, e stream ended,
-- k keep-alive expired, w slow consumer, h server shutdown (or its home
-- died), s lost by the store.

-- Set by each call (redis.call is not there while the library loads).
local call, P, ME, LEASE, MEM, INST, LIVE, HELD, CLOSED, CLOSEDW, CLOSEDB, PK
-- Per call: Redis time, instances known, notices to write (by instance:
-- a list of notices, each a list of fields), the last notice of each, and
-- out-of-order messages forgotten (evicted for room, dropped, expired).
local NOW, lastseen, outbox, last_notice, packs
local forgot = { e = 0, d = 0, x = 0 }
-- The caller's bounds: re-order window and bytes, incoming messages and
-- bytes per channel, replay events and bytes, events in an attach's reply,
-- outgoing messages and bytes, out-of-order bytes over all channels,
-- bytes and ids remembered of closed ids.
local WINDOW, QMAX, INMAX, INBMAX, REV, RBYTES, PAGE, OUTMAX, OUTBMAX, INTOT, CLOSEDMAX, CLOSEDIDS
-- Where an operation's own arguments begin.
local H = 6
-- Bounds as parsed, by their text: each instance sends the same text with
-- every call, parsed once (kept while the library is loaded).
local parsed_bounds = {}

-- Messages carried by one notice at most (unpack's stack is bounded).
local CHUNK = 1000
-- What holding an out-of-order message costs besides its bytes (reorder.rs).
local ENTRY_OVERHEAD = __ENTRY_OVERHEAD__
-- What keeping an event for replay costs besides its bytes (channel.rs).
local REPLAY_OVERHEAD = __REPLAY_OVERHEAD__
-- What remembering a closed id costs besides its id and messages (memory.rs).
local CLOSED_OVERHEAD = __CLOSED_OVERHEAD__

local function num(v) return tonumber(v) or 0 end
local function str(x) return string.format('%d', x) end
local function eid(x) return '0-' .. str(x) end

local function mkey(cid) return P .. 'm:' .. cid end
local function qkey(cid) return P .. 'q:' .. cid end
local function okey(ser) return P .. 'o:' .. ser end
local function ikey(iid) return P .. 'i:' .. iid end
local function hkey(iid) return P .. 'h:' .. iid end
local function skey(iid) return P .. 's:' .. iid end

local function now()
  if not NOW then
    local t = call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

local function last_refresh(iid)
  if lastseen[iid] == nil then lastseen[iid] = call('HGET', INST, iid) end
  return lastseen[iid]
end

-- Whether instance `iid`'s lease runs. The caller's does: it is calling
-- (no HGET and no TIME for it, on the hot paths of one instance).
local function alive(iid)
  if iid == ME then return true end
  local last = last_refresh(iid)
  return last ~= false and now() - tonumber(last) <= LEASE
end

-- Queues notice `n` (fields, or one packed string) for instance `iid`.
local function post_notice(iid, n)
  local box = outbox[iid]
  if not box then
    box = {}
    outbox[iid] = box
  end
  box[#box + 1] = n
  last_notice[iid] = n
  return n
end

-- A notice for instance `iid`, unless it has left (or been reaped). The
-- notices of a call go out together, one stream entry per instance (or a
-- few, for many), after everything else: the call is atomic anyway.
local function notify(iid, ...)
  if not iid or iid == '' or (iid ~= ME and last_refresh(iid) == false) then return nil end
  return post_notice(iid, { ... })
end

-- `<length>:` of the short values (most of them), made once.
local prefixes = {}
local function prefix(len)
  local p = prefixes[len]
  if not p then
    p = string.format('%d:', len)
    if len < 1024 then prefixes[len] = p end
  end
  return p
end

-- Whether instance `iid` reads its notices packed (it says so with each
-- lease refresh; the caller, of this version, does); one of an older
-- version sharing the Redis does not.
local function reads_packed(iid)
  if iid == ME then return true end
  local p = packs[iid]
  if p == nil then
    p = call('SISMEMBER', PK, iid) == 1
    packs[iid] = p
  end
  return p
end

-- Writes the notices of this call: each instance's as one stream entry of
-- one field, `p`, their fields packed as `<length>:<bytes>` each (notice.rs
-- unpacks them). One value instead of a dozen per notice: fewer arguments
-- to XADD, and fewer values for Redis to store and reply and for the
-- reader to parse. An instance that does not read them packed gets the
-- fields as they are, a few entries for many.
local function send_notices()
  for iid, box in pairs(outbox) do
    if reads_packed(iid) then
      local parts, k = {}, 0
      for _, n in ipairs(box) do
        if type(n) == 'string' then
          k = k + 1
          parts[k] = n
        else
          for _, v in ipairs(n) do
            parts[k + 1], parts[k + 2] = prefix(#v), v
            k = k + 2
          end
        end
      end
      call('XADD', ikey(iid), '*', 'p', table.concat(parts))
    else
      local f, limit = {}, 4 * CHUNK
      for _, n in ipairs(box) do
        if #f > 0 and #f + #n > limit then
          call('XADD', ikey(iid), '*', unpack(f))
          f = {}
        end
        for _, v in ipairs(n) do f[#f + 1] = v end
      end
      if #f > 0 then call('XADD', ikey(iid), '*', unpack(f)) end
    end
  end
end

-- Messages `msgs[i..j]` of channel `cid` (serial `ser`) from messageId
-- `first`, for its home `iid`: packed as they are made for a home that
-- reads them so (one concatenation instead of a value at a time).
local function notify_messages(iid, cid, ser, first, msgs, i, j)
  if not iid or iid == '' or (iid ~= ME and last_refresh(iid) == false) then return end
  local n = str(first)
  if not reads_packed(iid) then
    local f = { 't', 'm', 'c', cid, 's', ser, 'n', n }
    for x = i, j do
      f[#f + 1] = 'd'
      f[#f + 1] = msgs[x]
    end
    notify(iid, unpack(f))
    return
  end
  local p = '1:t1:m1:c' .. prefix(#cid) .. cid .. '1:s' .. prefix(#ser) .. ser .. '1:n' .. prefix(#n) .. n
  if i == j then
    p = p .. '1:d' .. prefix(#msgs[i]) .. msgs[i]
  else
    local parts = { p }
    for x = i, j do
      local d = msgs[x]
      parts[#parts + 1] = '1:d' .. prefix(#d) .. d
    end
    p = table.concat(parts)
  end
  post_notice(iid, p)
end

local function load(cid)
  local raw = call('HGETALL', mkey(cid))
  if #raw == 0 then return nil end
  local m = {}
  for i = 1, #raw, 2 do m[raw[i]] = raw[i + 1] end
  return m
end

-- Only the fields a hot path reads; `ser` is false when there is no channel.
-- One function each, each filling a table of its own that lives as long as
-- the library: the hot paths make no table per request (what a request's
-- table holds is used before the next request reads into it).
local PP = { ser = false, ph = false, ni = false, pin = false, pinb = false, qb = false,
  fresh = false, fw = false, gone = false, home = false }
local function peek_post(cid)
  local v, m = call('HMGET', mkey(cid), 'ser', 'ph', 'ni', 'pin', 'pinb', 'qb', 'fresh', 'fw', 'gone', 'home'), PP
  m.ser, m.ph, m.ni, m.pin, m.pinb, m.qb, m.fresh, m.fw, m.gone, m.home =
    v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
  return m
end
local PS = { ser = false, ph = false, hseq = false, ne = false, cum = false, sent = false,
  sentc = false, tok = false, hold = false }
local function peek_send(cid)
  local v, m = call('HMGET', mkey(cid), 'ser', 'ph', 'hseq', 'ne', 'cum', 'sent', 'sentc', 'tok', 'hold'), PS
  m.ser, m.ph, m.hseq, m.ne, m.cum, m.sent, m.sentc, m.tok, m.hold =
    v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
  return m
end
local function peek_cursor(cid)
  local v = call('HMGET', mkey(cid), 'ser', 'sent', 'fid', 'fcb')
  return { ser = v[1], sent = v[2], fid = v[3], fcb = v[4] }
end
local function peek_taken(cid)
  local v = call('HMGET', mkey(cid), 'ser', 'pin', 'pinb')
  return { ser = v[1], pin = v[2], pinb = v[3] }
end

-- The commonest replies, made once.
local OK, DUP = { 'ok' }, { 'dup' }

local function is_live(m) return m ~= nil and (m.ph == 'o' or m.ph == 's') end

local function set(cid, m, ...)
  local kv = { ... }
  for i = 1, #kv, 2 do m[kv[i]] = kv[i + 1] end
  call('HSET', mkey(cid), ...)
end

-- The attached stream is no longer this channel's.
local function detach(cid, m)
  if m.tok ~= '' then
    notify(m.hold, 't', 'x', 'c', cid, 's', m.ser, 'k', m.tok)
    call('SREM', skey(m.hold), cid)
    set(cid, m, 'tok', '', 'hold', '')
  end
end

-- Out-of-order bytes of open channels change by `d` (see P held).
local function held_by(d)
  if d ~= 0 then call('INCRBY', HELD, d) end
end

-- Forgets the budget entry of a remembered id (its keys stay).
local function unremember(cid)
  local w = call('HGET', CLOSEDW, cid)
  if w then
    call('HDEL', CLOSEDW, cid)
    call('ZREM', CLOSED, cid)
    call('DECRBY', CLOSEDB, w)
  end
end

-- Forgets a remembered id altogether; counts its messages as `why`.
local function forget(cid, why)
  unremember(cid)
  local k = mkey(cid)
  -- Only a memory: an id that came back is live again (its keys are its own).
  if call('HGET', k, 'ph') ~= '' then return end
  forgot[why] = forgot[why] + call('HLEN', qkey(cid))
  call('DEL', k, qkey(cid))
end

-- A closed id's next messageId and out-of-order messages, remembered
-- within the budget of closed ids (the oldest forgotten first), else
-- dropped. Their bytes leave P held either way.
local function remember(cid, ni, qb)
  held_by(-qb)
  local k, q = mkey(cid), qkey(cid)
  local weight = #cid + qb + CLOSED_OVERHEAD
  if MEM <= 0 or weight > CLOSEDMAX then
    forgot.d = forgot.d + call('HLEN', q)
    call('DEL', q)
    return
  end
  unremember(cid)
  while num(call('GET', CLOSEDB)) + weight > CLOSEDMAX or call('ZCARD', CLOSED) >= CLOSEDIDS do
    local oldest = call('ZRANGE', CLOSED, 0, 0)[1]
    if not oldest then break end
    forget(oldest, 'e')
  end
  call('HSET', k, 'ph', '', 'ni', ni, 'qb', str(qb))
  call('ZADD', CLOSED, str(now()), cid)
  call('HSET', CLOSEDW, cid, weight)
  call('INCRBY', CLOSEDB, weight)
  -- Swept by the instances' heartbeats (sweep); should none be left to
  -- do it, the keys go by themselves a little later.
  local backstop = MEM + LEASE + 60000
  call('PEXPIRE', k, backstop)
  call('PEXPIRE', q, backstop)
end

-- Forgets what has been remembered for the memory period, `batch` at most.
local function sweep(batch)
  if MEM <= 0 then return end
  local due = call('ZRANGEBYSCORE', CLOSED, '-inf', '(' .. str(now() - MEM), 'LIMIT', 0, batch)
  for _, cid in ipairs(due) do forget(cid, 'x') end
end

-- Closed: the home hears why and what never reached the client; the next
-- messageId and out-of-order messages are remembered for a new incarnation.
local function finish(cid, m, reason)
  local undelivered = math.max(num(m.ne) - 1 - num(m.sent), 0) + num(m.lost)
  detach(cid, m)
  notify(m.home, 't', 'C', 'c', cid, 's', m.ser, 'r', reason, 'u', str(undelivered))
  call('DEL', okey(m.ser))
  call('SREM', LIVE, cid)
  call('SREM', hkey(m.home), cid)
  call('DEL', mkey(cid))
  remember(cid, m.ni or '0', num(m.qb))
end

-- The stream went away: suspend under keep-alive, else close.
local function lose_stream(cid, m)
  if m.ph == 'o' then
    if num(m.ka) > 0 then
      local ep = str(num(m.ep) + 1)
      set(cid, m, 'ph', 's', 'ep', ep)
      notify(m.home, 't', 'S', 'c', cid, 's', m.ser, 'p', ep)
    else
      finish(cid, m, 'e')
    end
  elseif m.ph == 'c' then
    finish(cid, m, m.rs)
  end
end

-- Hands messages from messageId `first` on to the home, with the
-- contiguous successors waiting out of order; returns count and bytes.
local function release(cid, m, first, msgs)
  local qb0 = num(m.qb)
  local qb, nx, bytes = qb0, first + #msgs, 0
  for _, v in ipairs(msgs) do bytes = bytes + #v end
  if qb > 0 then
    local q = qkey(cid)
    while qb > 0 do
      local v = call('HGET', q, str(nx))
      if not v then break end
      call('HDEL', q, str(nx))
      qb = qb - #v - ENTRY_OVERHEAD
      msgs[#msgs + 1] = v
      bytes = bytes + #v
      nx = nx + 1
    end
    qb = math.max(qb, 0)
    held_by(qb - qb0)
  end
  for i = 1, #msgs, CHUNK do
    notify_messages(m.home, cid, m.ser, first + i - 1, msgs, i, math.min(i + CHUNK - 1, #msgs))
  end
  -- Only what changes: each field written is a search of the hash. Numbers
  -- go to Redis as they are: it writes an integer's digits itself.
  local pin, pinb = num(m.pin) + #msgs, num(m.pinb) + bytes
  if qb == qb0 and m.fresh == '0' and m.fw == '0' then
    call('HSET', mkey(cid), 'ni', nx, 'pin', pin, 'pinb', pinb)
    return
  end
  local kv = { 'ni', nx, 'pin', pin, 'pinb', pinb }
  if qb ~= qb0 then kv[#kv + 1] = 'qb'; kv[#kv + 1] = qb end
  if m.fresh ~= '0' then kv[#kv + 1] = 'fresh'; kv[#kv + 1] = '0' end
  if m.fw ~= '0' then kv[#kv + 1] = 'fw'; kv[#kv + 1] = '0' end
  call('HSET', mkey(cid), unpack(kv))
end

-- A holder has handed events through `sent` (bytes `sentc`) to its
-- stream: the replay keeps the last of them, within both bounds.
local function cursor(cid, m, sent, sentc)
  local rev, rbytes = REV, RBYTES
  if sent <= num(m.sent) then return end
  local fid, fcb = num(m.fid), num(m.fcb)
  local function fits(id, before)
    local kept = sent - id + 1
    return kept <= rev and sentc - before + REPLAY_OVERHEAD * kept <= rbytes
  end
  if fits(fid, fcb) then
    set(cid, m, 'sent', str(sent), 'sentc', str(sentc))
    return
  end
  -- Trim: the first id that fits, found from the count bound on.
  local o = okey(m.ser)
  local from = eid(math.max(fid, sent - rev + 1))
  while true do
    local es = call('XRANGE', o, from, '+', 'COUNT', 64)
    if #es == 0 then
      fid, fcb = sent + 1, sentc
      break
    end
    local found = false
    for _, e in ipairs(es) do
      local id = tonumber(string.sub(e[1], 3))
      local before = tonumber(e[2][4]) - #e[2][2]
      if id > sent or fits(id, before) then
        fid, fcb, found = id, before, true
        break
      end
    end
    if found then break end
    from = '(' .. es[#es][1]
  end
  call('XTRIM', o, 'MINID', eid(fid))
  set(cid, m, 'sent', str(sent), 'sentc', str(sentc), 'fid', str(fid), 'fcb', str(fcb))
end

-- An instance whose lease ran out: its channels lose their application
-- (closed with the control event) and their streams (suspended or closed).
-- At most `batch` of each per call; the instance is forgotten when none
-- is left.
local function reap(dead, batch)
  local homed = call('SPOP', hkey(dead), batch)
  for _, cid in ipairs(homed) do
    local m = load(cid)
    if m and m.home == dead and m.ph ~= '' then
      local holder_alive = m.hold ~= dead and alive(m.hold)
      if m.ph == 'o' and m.tok ~= '' and holder_alive then
        set(cid, m, 'ph', 'c', 'rs', 'h')
        call('SREM', LIVE, cid)
        notify(m.hold, 't', 'f', 'c', cid, 's', m.ser, 'k', m.tok, 'i', str(num(m.ne) - 1),
          'r', 'h', 'l', m.lost, 'h', m.home)
      elseif m.ph ~= 'c' or not holder_alive then
        finish(cid, m, 'h')
      end
    end
  end
  local held = call('SPOP', skey(dead), batch)
  for _, cid in ipairs(held) do
    local m = load(cid)
    if m and m.hold == dead and m.tok ~= '' then
      set(cid, m, 'tok', '', 'hold', '')
      lose_stream(cid, m)
    end
  end
  if #homed == 0 and #held == 0 then
    call('DEL', ikey(dead), hkey(dead), skey(dead))
    call('HDEL', INST, dead)
    call('SREM', PK, dead)
    return 0
  end
  return #homed + #held
end

---------------------------------------------------------------------------

local ops = {}

-- A GET: attach stream `tok` to the channel (resume, takeover), or start
-- a new channel homed here. Replies {'new', serial, next messageId},
-- {'att', serial, home, first event id to send, last event id, how
-- ('resumed', 'took', ''), last-event-id ahead (0/1), events sent again,
-- entries...}, or
-- {'full'} when a new channel may not be made here.
ops['attach'] = function(A, b)
  local cid, tok, last, ka, may_create = A[b], A[b + 1], tonumber(A[b + 2]), A[b + 3], A[b + 4]
  local m = load(cid)
  if is_live(m) then
    local how = ''
    if m.ph == 's' then
      notify(m.home, 't', 'R', 'c', cid, 's', m.ser)
      how = 'resumed'
    elseif m.tok ~= '' then
      detach(cid, m)
      how = 'took'
    end
    set(cid, m, 'ph', 'o', 'tok', tok, 'hold', ME)
    call('SADD', skey(ME), cid)
    local ne = num(m.ne)
    local start, ahead = num(m.sent) + 1, 0
    if last >= 0 then
      if last > ne - 1 then
        ahead = 1
      else
        start = last + 1
        local oldest = math.min(num(m.fid), ne)
        local first = math.max(start, num(m.gapr) + 1)
        if first < oldest then
          local lost = oldest - first
          set(cid, m, 'lost', str(num(m.lost) + lost), 'gapr', str(oldest - 1))
          notify(m.home, 't', 'G', 'c', cid, 's', m.ser, 'l', str(lost), 'f', str(first))
        end
        start = math.max(start, oldest)
      end
    end
    local replayed = math.max(math.min(num(m.sent), ne - 1) - start + 1, 0)
    local r = { 'att', m.ser, m.home, str(start), str(ne - 1), how, ahead, replayed }
    if start <= ne - 1 then
      local es = call('XRANGE', okey(m.ser), eid(start), '+', 'COUNT', PAGE)
      for _, e in ipairs(es) do
        r[#r + 1] = e[1]
        r[#r + 1] = e[2][2]
        r[#r + 1] = e[2][4]
      end
    end
    return r
  end
  if may_create ~= '1' then return { 'full' } end
  local ni, qb, fresh = '0', '0', '1'
  if m then
    -- Remembered after a close, or still closing: it keeps counting.
    ni, qb, fresh = m.ni or '0', m.qb or '0', '0'
    if m.ph == 'c' then call('PEXPIRE', okey(m.ser), 120000) end
  end
  if not m or m.ph == '' then
    -- A memory's messages count with the open channels again.
    unremember(cid)
    held_by(num(qb))
  end
  local ser = str(call('INCR', P .. 'serial'))
  local k = mkey(cid)
  call('DEL', k)
  -- The fields the hot paths (peek_*) read first: a small hash is a list
  -- that each field's read or write searches from its start.
  call('HSET', k, 'ser', ser, 'ph', 'o', 'ni', ni, 'pin', '0', 'pinb', '0', 'qb', qb,
    'ne', '1', 'cum', '0', 'hseq', '0', 'sent', '0', 'sentc', '0', 'tok', tok, 'hold', ME,
    'fresh', fresh, 'fw', '0', 'gone', '0', 'home', ME, 'fid', '1', 'fcb', '0', 'ep', '0',
    'rs', '', 'lost', '0', 'gapr', '0', 'ka', ka)
  call('PERSIST', qkey(cid))
  call('SADD', LIVE, cid)
  call('SADD', hkey(ME), cid)
  call('SADD', skey(ME), cid)
  return { 'new', ser, ni }
end

-- A POST's message: deduplicated, re-ordered, and handed to the home in
-- order. Replies {'ok'}, {'dup'}, {'unknown'}, {'gone'} (the application
-- left), {'dead'} (its home died), {'busy'} (the application is behind:
-- retry), {'far', next}, {'qfull', bytes held} or {'full', limit} (the
-- out-of-order bytes of all channels reached the limit).
ops['post'] = function(A, b)
  local cid, id, msg = A[b], tonumber(A[b + 1]), A[b + 2]
  local m = peek_post(cid)
  if not is_live(m) then return { 'unknown' } end
  if m.gone == '1' then return { 'gone' } end
  if not alive(m.home) then return { 'dead' } end
  local ni = num(m.ni)
  if id < ni then return DUP end
  local pin, pinb = num(m.pin), num(m.pinb)
  local room = pin == 0 or (pin < INMAX and pinb + #msg <= INBMAX)
  if id == ni then
    if not room then return { 'busy' } end
    release(cid, m, id, { msg })
    return OK
  end
  if call('HEXISTS', qkey(cid), str(id)) == 1 then return DUP end
  if id - ni > WINDOW then return { 'far', str(ni) } end
  if not room then return { 'busy' } end
  local w = #msg + ENTRY_OVERHEAD
  local qb = num(m.qb) + w
  if qb > QMAX then return { 'qfull', m.qb } end
  if num(call('GET', HELD)) + w > INTOT then return { 'full', str(INTOT) } end
  call('HSET', qkey(cid), str(id), msg)
  held_by(w)
  set(cid, m, 'qb', str(qb))
  if m.fresh == '1' then
    set(cid, m, 'fresh', '0', 'fw', '1')
    notify(m.home, 't', 'W', 'c', cid, 's', m.ser)
  end
  return OK
end

-- What a home's application did, in order: five values per operation: kind,
-- client id, serial, sequence, argument. S send (the encoded data), C
-- close (reason), D drop the stream, E keep-alive ran out (epoch), F the
-- first-message wait ran out, G the application left, W the store did
-- not take the sends in time (slow consumer), X close now (shutdown's
-- grace is over). An operation already applied (a batch
-- sent again after a timeout) is skipped by its sequence. Replies {the
-- client ids whose channel is no longer in the store, the sends to streams
-- held by the caller}: a send whose stream the caller holds (the writer's
-- instance is the holder: one instance, or sticky routing) goes back in
-- the reply instead of a notice, as four values: the operation's place in
-- the call (from 0), the stream's token, the event id and the channel's
-- data bytes through it; the caller has the data. A send skipped as
-- already applied tells such a stream the events the store has (place
-- -1, the last event id, -1): what the lost reply carried is read back
-- from the event stream.
ops['ops'] = function(A)
  local missing, here = {}, {}
  local k, at = H + 1, -1
  while k + 4 <= #A do
    local kind, cid, ser, seqs, arg = A[k], A[k + 1], A[k + 2], A[k + 3], A[k + 4]
    local seq = tonumber(seqs)
    k, at = k + 5, at + 1
    local m = (kind == 'S') and peek_send(cid) or load(cid)
    if not m or m.ser ~= ser then
      missing[#missing + 1] = cid
    elseif seq <= num(m.hseq) then
      if kind == 'S' and m.tok ~= '' and m.hold == ME then
        local h = #here
        here[h + 1], here[h + 2], here[h + 3], here[h + 4] = -1, m.tok, num(m.ne) - 1, -1
      end
    else
      if kind ~= 'S' or not is_live(m) then set(cid, m, 'hseq', str(seq)) end
      -- A send that crossed the client's DELETE never reaches it: counted.
      if kind == 'S' and m.ph == 'c' then call('HINCRBY', mkey(cid), 'lost', 1) end
      if kind == 'S' and is_live(m) then
        local ne, cum = num(m.ne), num(m.cum)
        if ne - 1 - num(m.sent) >= OUTMAX or cum - num(m.sentc) + #arg > OUTBMAX then
          m = load(cid)
          set(cid, m, 'hseq', str(seq), 'lost', str(num(m.lost) + 1))
          finish(cid, m, 'w')
        else
          cum = cum + #arg
          call('XADD', okey(ser), eid(ne), 'd', arg, 'c', cum)
          call('HSET', mkey(cid), 'hseq', seqs, 'ne', ne + 1, 'cum', cum)
          if m.tok ~= '' and m.hold == ME then
            local h = #here
            here[h + 1], here[h + 2], here[h + 3], here[h + 4] = at, m.tok, ne, cum
          elseif m.tok ~= '' then
            -- Consecutive sends to one stream go out as one notice.
            local c = str(cum)
            local n = last_notice[m.hold]
            if type(n) == 'table' and n[2] == 'e' and n[8] == m.tok and n.next == ne and #n < 2 * CHUNK then
              n[#n + 1] = 'd'
              n[#n + 1] = arg
              n[12] = c
            else
              n = notify(m.hold, 't', 'e', 'c', cid, 's', ser, 'k', m.tok, 'i', str(ne), 'x', c, 'd', arg)
            end
            if n then n.next = ne + 1 end
          end
        end
      elseif kind == 'C' and is_live(m) then
        if m.ph == 'o' and m.tok ~= '' then
          set(cid, m, 'ph', 'c', 'rs', arg)
          call('SREM', LIVE, cid)
          notify(m.hold, 't', 'f', 'c', cid, 's', ser, 'k', m.tok, 'i', str(num(m.ne) - 1),
            'r', arg, 'l', m.lost, 'h', m.home)
        else
          finish(cid, m, arg)
        end
      elseif kind == 'D' and m.ph == 'o' and m.tok ~= '' then
        detach(cid, m)
        lose_stream(cid, m)
      elseif kind == 'E' and m.ph == 's' and m.ep == arg then
        finish(cid, m, 'k')
      elseif kind == 'F' and is_live(m) and m.fw == '1' then
        local keys = call('HKEYS', qkey(cid))
        local low = nil
        for _, key in ipairs(keys) do
          local v = tonumber(key)
          if not low or v < low then low = v end
        end
        if low then
          local v = call('HGET', qkey(cid), str(low))
          call('HDEL', qkey(cid), str(low))
          local qb = num(m.qb) - #v - ENTRY_OVERHEAD
          held_by(qb - num(m.qb))
          set(cid, m, 'qb', str(qb))
          release(cid, m, low, { v })
        end
      elseif kind == 'W' and m.ph ~= '' then
        set(cid, m, 'lost', str(num(m.lost) + 1))
        finish(cid, m, 'w')
      elseif kind == 'G' then
        set(cid, m, 'gone', '1', 'pin', '0', 'pinb', '0')
      elseif kind == 'X' and m.ph ~= '' then
        local reason = 'h'
        if m.ph == 'c' then reason = m.rs end
        finish(cid, m, reason)
      end
    end
  end
  return { missing, here }
end

-- A holder's stream ended: the client went away, a write failed, or it
-- wrote the control close (flushed = 1). A closing incarnation already
-- replaced by a new one is reported to its home with the holder's count.
ops['ended'] = function(A, b)
  local cid, ser, tok, sent, sentc, flushed = A[b], A[b + 1], A[b + 2], tonumber(A[b + 3]), tonumber(A[b + 4]), A[b + 5]
  local home, reason, undelivered = A[b + 6], A[b + 7], A[b + 8]
  local m = load(cid)
  if m and m.ser == ser then
    if m.tok == tok then
      call('SREM', skey(ME), cid)
      set(cid, m, 'tok', '', 'hold', '')
      if flushed == '1' then
        set(cid, m, 'sent', str(num(m.ne) - 1), 'sentc', m.cum)
      else
        cursor(cid, m, sent, sentc)
      end
      lose_stream(cid, m)
    end
    return 1
  end
  if home ~= '' then
    notify(home, 't', 'C', 'c', cid, 's', ser, 'r', reason, 'u', undelivered)
    call('DEL', okey(ser))
  end
  return 0
end

-- A GET whose attach timed out: undo it if it happened after all. A
-- channel made by it has no application here (orphan = 1): closed.
ops['abandon'] = function(A, b)
  local cid, tok, orphan = A[b], A[b + 1], A[b + 2]
  local m = load(cid)
  if m and m.tok == tok then
    call('SREM', skey(ME), cid)
    set(cid, m, 'tok', '', 'hold', '')
    if orphan == '1' and m.home == ME then finish(cid, m, 'e') else lose_stream(cid, m) end
  end
  return 1
end

-- A DELETE: the client leaves for good.
ops['cclose'] = function(A, b)
  local cid = A[b]
  local m = load(cid)
  if not is_live(m) then return 0 end
  if m.ph == 'o' and m.tok ~= '' and alive(m.hold) then
    -- Closed for everyone at once; its holder ends the stream without the
    -- control event (nobody listens) and says what it wrote, so that the
    -- close counts exactly what never reached the client ('ended').
    set(cid, m, 'ph', 'c', 'rs', 'l')
    call('SREM', LIVE, cid)
    notify(m.hold, 't', 'f', 'c', cid, 's', m.ser, 'k', m.tok, 'i', str(num(m.ne) - 1),
      'r', 'l', 'l', m.lost, 'h', m.home, 'q', '1')
  else
    finish(cid, m, 'l')
  end
  return 1
end

-- A holder found events missing from a stream (trimmed from the store
-- before it read them): lost, told to the home once.
ops['lost'] = function(A, b)
  local cid, ser, first, last = A[b], A[b + 1], tonumber(A[b + 2]), tonumber(A[b + 3])
  local m = load(cid)
  if m and m.ser == ser and last > num(m.gapr) then
    first = math.max(first, num(m.gapr) + 1)
    set(cid, m, 'lost', str(num(m.lost) + last - first + 1), 'gapr', str(last))
    notify(m.home, 't', 'G', 'c', cid, 's', ser, 'l', str(last - first + 1), 'f', str(first))
  end
  return 1
end

-- What an instance has to say every so often: its inbound stream read
-- through this id ('' none), then how many stream cursors (client id,
-- serial, sent, bytes) follow, and then how many messages its
-- applications took (client id, serial, count, bytes) follow.
ops['report'] = function(A)
  local read = A[H + 1]
  local k = H + 2
  local n = tonumber(A[k])
  k = k + 1
  for _ = 1, n do
    local m = peek_cursor(A[k])
    if m.ser == A[k + 1] then cursor(A[k], m, tonumber(A[k + 2]), tonumber(A[k + 3])) end
    k = k + 4
  end
  n = tonumber(A[k])
  k = k + 1
  for _ = 1, n do
    local m = peek_taken(A[k])
    if m.ser == A[k + 1] then
      set(A[k], m, 'pin', str(math.max(num(m.pin) - tonumber(A[k + 2]), 0)),
        'pinb', str(math.max(num(m.pinb) - tonumber(A[k + 3]), 0)))
    end
    k = k + 4
  end
  if read ~= '' then call('XTRIM', ikey(ME), 'MINID', read) end
  return 1
end

-- The lease: refreshed, closed ids remembered for the memory period
-- forgotten, and (reap = 1) the channels of instances whose lease ran out
-- closed or suspended; `batch` at a time. Replies how many channels were
-- handled.
ops['beat'] = function(A)
  local reap_now, batch = A[H + 1], tonumber(A[H + 2])
  call('HSET', INST, ME, str(now()))
  call('SADD', PK, ME)
  sweep(batch)
  local done = 0
  if reap_now == '1' then
    local all = call('HGETALL', INST)
    for i = 1, #all, 2 do
      if all[i] ~= ME and now() - tonumber(all[i + 1]) > LEASE then
        done = done + reap(all[i], batch)
      end
    end
  end
  return done
end

-- An instance leaves (shutdown): what is left of its channels goes as if
-- it had died, a batch at a time, and then it is forgotten. Replies how
-- many channels this call handled.
ops['leave'] = function(A)
  -- One batch per call (the caller repeats until 0): a script blocks
  -- every other client of Redis while it runs.
  return reap(ME, tonumber(A[H + 1]))
end

-- A broadcast: every instance gives it to the channels homed there.
-- Replies its sequence number and the channels open cluster-wide.
ops['bcast'] = function(A)
  local seq = call('INCR', P .. 'bseq')
  call('XADD', P .. 'b', 'MAXLEN', '~', A[H + 2], '*', 'o', ME, 'q', str(seq), 'd', A[H + 1])
  return { seq, call('SCARD', LIVE) }
end

-- An instance's requests, independent of each other, in one call: each
-- request is its operation and its arguments (ARITY of them). Replies the
-- requests' replies, in order.
local ARITY = { attach = 5, post = 3, ended = 9, abandon = 3, cclose = 1, lost = 4 }
ops['batch'] = function(A)
  local replies = {}
  local k = H + 1
  while k <= #A do
    local name = A[k]
    local arity = ARITY[name]
    if not arity then return redis.error_reply('ssechan: unknown request ' .. tostring(name)) end
    replies[#replies + 1] = ops[name](A, k + 1)
    k = k + 1 + arity
  end
  return replies
end

-- The caller's bounds, twelve numbers separated by commas.
local function bounds(text)
  local b = parsed_bounds[text]
  if not b then
    b = {}
    for v in string.gmatch(text, '%d+') do b[#b + 1] = tonumber(v) end
    parsed_bounds[text] = b
  end
  WINDOW, QMAX, INMAX, INBMAX, REV, RBYTES, PAGE, OUTMAX, OUTBMAX, INTOT, CLOSEDMAX, CLOSEDIDS = unpack(b, 1, 12)
end

-- Out-of-order messages this call forgot, for the caller to log.
local function tell_forgotten()
  if forgot.e + forgot.d + forgot.x > 0 then
    notify(ME, 't', 'o', 'e', str(forgot.e), 'd', str(forgot.d), 'x', str(forgot.x))
  end
end

local function run(_, A)
  call, ME, LEASE, MEM = redis.call, A[3], tonumber(A[4]), tonumber(A[5])
  if A[1] ~= P then
    P = A[1]
    INST, LIVE, HELD, PK = P .. 'inst', P .. 'live', P .. 'held', P .. 'pk'
    CLOSED, CLOSEDW, CLOSEDB = P .. 'closed', P .. 'closedw', P .. 'closedb'
  end
  NOW, lastseen, outbox, last_notice, packs = nil, {}, {}, {}, {}
  forgot.e, forgot.d, forgot.x = 0, 0, 0
  bounds(A[6])
  local op = ops[A[2]]
  if not op or ARITY[A[2]] then
    return redis.error_reply('ssechan: unknown operation ' .. tostring(A[2]))
  end
  local r = op(A)
  tell_forgotten()
  send_notices()
  return r
end

-- What may grow the store is refused while Redis is out of memory (a
-- POST or a new stream gets 503, sends wait); what keeps the instances
-- alive and frees memory (leases, reports that trim, leaving) is not.
redis.register_function('__LIBRARY__', run)
redis.register_function { function_name = '__LIBRARY___free', callback = run, flags = { 'allow-oom' } }
