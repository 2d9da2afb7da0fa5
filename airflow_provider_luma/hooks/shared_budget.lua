--[[
The decisions of the shared call budget, run atomically in Redis: CallSchedule (hooks/budget.py) step
for step, with Redis's own clock (TIME) as the one clock of every process on every host.

KEYS (one key's budget; all names carry the same {fingerprint} tag, so they share a cluster slot):
  1 state     hash: tat (the cell rate algorithm's theoretical arrival time), ticket (the last one
              handed out), paused_until, paused_at, streak
  2 queue     sorted set: tickets waiting to start, scored by ticket (first come, first served)
  3 reserved  hash: ticket -> the start time reserved for it
  4 seen      hash: ticket -> when its waiter last asked (a waiter of a killed process stops asking)
  5 flight    sorted set: calls let through and not answered yet, scored by the time until which each
              counts unanswered (its start plus the `counts_for` its caller named)
  6 answered  sorted set: answered calls, scored by the time until which each counts
  7 starts    list: the latest `limit` starts (the plan after a 429 starts from them)
  8 plans     list: the latest `limit` start times handed out
ARGV: op, limit, interval, tolerance, window, stale, ttl, first_pause, max_pause, now
(empty: Redis's clock; a time only where a test drives the script on a clock of its own), then
  acquire  counts_for                         -> {0, ticket, started} or {1, ticket, seconds to wait}
  start    ticket counts_for                  -> the same (a ticket lost to `stale` queues anew)
  cancel   ticket                             -> {0}
  finish   ticket started status retry_after  -> {0}, or {1, seconds paused} after a 429
           (status and retry_after empty: no answer, no Retry-After)
Times are seconds on Redis's clock; replies carry them as text (Redis truncates Lua numbers).
]]

if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5 replicates scripts that read TIME only as effects
end

local S, Q, R, W, F, A, L, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local op = ARGV[1]
local limit = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local stale = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local first_pause = tonumber(ARGV[8])
local max_pause = tonumber(ARGV[9])

local now = tonumber(ARGV[10])
if now == nil then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end

local function fmt(x)
  return string.format('%.17g', x)
end

local function field(key, name, default)
  local value = redis.call('HGET', key, name)
  if value then
    return tonumber(value)
  end
  return default
end

local function dequeue(id)
  redis.call('ZREM', Q, id)
  redis.call('HDEL', R, id)
  redis.call('HDEL', W, id)
end

-- CallSchedule._plan: the next start time in order of asking, at the rate with its burst; the plan
-- itself keeps the bound (no more than `limit` planned starts in a window).
local function plan(at_least)
  local tat = field(S, 'tat', -math.huge)
  local at = math.max(at_least, field(S, 'paused_until', -math.huge), tat - tolerance)
  local planned = redis.call('LLEN', N)
  if planned >= limit then
    at = math.max(at, tonumber(redis.call('LINDEX', N, planned - limit)) + window)
  end
  redis.call('HSET', S, 'tat', fmt(math.max(tat, at) + interval))
  redis.call('RPUSH', N, fmt(at))
  redis.call('LTRIM', N, -limit, -1)
  return at
end

local function reserve()
  local ticket = redis.call('HINCRBY', S, 'ticket', 1)
  local id = tostring(ticket)
  redis.call('ZADD', Q, ticket, id)
  redis.call('HSET', R, id, fmt(plan(now)))
  redis.call('HSET', W, id, fmt(now))
  return id
end

-- Waiters of a killed process never ask again nor cancel: a ticket overdue by `stale` seconds whose
-- waiter has not asked for as long leaves the queue, not to hold the tickets behind it forever.
-- Reserved times follow ticket order, so only the head of the queue can be overdue.
local function drop_stale()
  local cutoff = now - stale
  for _, id in ipairs(redis.call('ZRANGE', Q, 0, 15)) do
    if field(R, id, now) >= cutoff then
      break
    end
    if field(W, id, now) < cutoff then
      dequeue(id)
    end
  end
end

-- CallSchedule._room_at: when the window has room for `ahead` calls and one more. An answered call
-- counts until its answer (or the end named at its start, if sooner); one still unanswered until that
-- end. Counts come from ZCARD and only the earliest values are read: the cost does not grow with the
-- window's content.
local function scores(key, count, plus)
  local values = {}
  local entries = redis.call('ZRANGE', key, 0, count - 1, 'WITHSCORES')
  for i = 2, #entries, 2 do
    values[#values + 1] = tonumber(entries[i]) + plus
  end
  return values
end

local function room_at(ahead)
  local horizon = now - window
  redis.call('ZREMRANGEBYSCORE', A, '-inf', fmt(horizon))
  -- Unanswered calls whose end left the window count no more (finish() is told their start).
  redis.call('ZREMRANGEBYSCORE', F, '-inf', fmt(horizon))
  local total = redis.call('ZCARD', A) + redis.call('ZCARD', F)
  local leaving = total + ahead - limit -- calls that must leave the window first, less one
  if leaving < 0 then
    return now
  end
  if total == 0 then
    return now + window
  end
  local rank = math.min(leaving, total - 1) + 1
  local counted = scores(A, rank, 0)
  for _, value in ipairs(scores(F, rank, 0)) do
    counted[#counted + 1] = value
  end
  table.sort(counted)
  return counted[rank] + window
end

-- CallSchedule.start: start now if the reserved time has come and the window has room for this call
-- and for the tickets queued ahead of it; else say when to ask again.
local function start(id, counts_for)
  local at = field(R, id, nil)
  if at == nil then
    return nil
  end
  if at <= now then
    redis.call('HSET', W, id, fmt(now))
    drop_stale()
    at = room_at(redis.call('ZRANK', Q, id))
  end
  if at > now then
    return {1, id, fmt(at - now)}
  end
  dequeue(id)
  redis.call('ZADD', F, fmt(now + counts_for), id)
  redis.call('RPUSH', L, fmt(now))
  redis.call('LTRIM', L, -limit, -1)
  return {0, id, fmt(now)}
end

-- CallSchedule.rate_limited: pause every call not started yet; the queue is planned again from the
-- pause's end, in order, at the rate without a burst.
local function rate_limited(started, retry_after)
  local paused_at = field(S, 'paused_at', -math.huge)
  local paused_until = field(S, 'paused_until', -math.huge)
  local streak = field(S, 'streak', 0)
  local fresh = started >= paused_at
  if fresh then
    streak = streak + 1
    redis.call('HSET', S, 'streak', streak)
  end
  local seconds
  if retry_after ~= nil then
    seconds = math.min(math.max(retry_after, 0), max_pause)
  else
    seconds = math.min(first_pause * 2 ^ (streak - 1), max_pause)
  end
  local pause_end = now + seconds
  if pause_end <= paused_until then
    return paused_until
  end
  redis.call('HSET', S, 'paused_until', fmt(pause_end))
  if fresh then
    redis.call('HSET', S, 'paused_at', fmt(now))
  end
  redis.call('HSET', S, 'tat', fmt(pause_end + tolerance))
  redis.call('DEL', N)
  local starts = redis.call('LRANGE', L, -limit, -1)
  if #starts > 0 then
    redis.call('RPUSH', N, unpack(starts))
  end
  for _, id in ipairs(redis.call('ZRANGE', Q, 0, -1)) do
    redis.call('HSET', R, id, fmt(plan(pause_end)))
  end
  return pause_end
end

-- CallSchedule.succeeded: a call not rate limited after the pause began ends the streak.
local function succeeded(started)
  if field(S, 'streak', 0) > 0 and started >= field(S, 'paused_at', -math.huge) then
    redis.call('HSET', S, 'streak', 0)
  end
end

local reply
if op == 'acquire' then
  reply = start(reserve(), tonumber(ARGV[11]))
elseif op == 'start' then
  local counts_for = tonumber(ARGV[12])
  reply = start(ARGV[11], counts_for) or start(reserve(), counts_for)
elseif op == 'cancel' then
  dequeue(ARGV[11])
  reply = {0}
elseif op == 'finish' then
  local id, started = ARGV[11], tonumber(ARGV[12])
  local status, retry_after = tonumber(ARGV[13]), tonumber(ARGV[14])
  local flew = redis.call('ZSCORE', F, id)
  if flew then
    redis.call('ZREM', F, id)
    local counted = math.min(now, tonumber(flew))
    if counted > now - window then
      redis.call('ZADD', A, fmt(counted), id)
    end
  end
  reply = {0}
  if status == 429 then
    reply = {1, fmt(rate_limited(started, retry_after) - now)}
  elseif status ~= nil then
    succeeded(started)
  end
else
  return redis.error_reply('unknown operation ' .. tostring(op))
end

for _, key in ipairs(KEYS) do
  redis.call('EXPIRE', key, ttl)
end
return reply
