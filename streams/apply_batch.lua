-- Applies one BatchPlan atomically (see streams/state_store.py, streams/processor.py).
-- KEYS[1] = offsets hash, KEYS[2] = meta hash. ARGV[1] = the plan as JSON.
-- Every other key is named in the plan (built by schemas/keyspace.py on the Python side).
-- (apply_batch_baseline.lua is the script before the issue 22 CPU work, kept only for
-- `streamrec bench ingest`'s side-by-side figure; both produce the same state.)
--
-- Exactly-once bookkeeping: for each (topic|partition) the plan carries the first and last
-- offset of its events. If any first offset is at or below the stored offset, nothing is
-- applied and {"conflict", field, stored} is returned: the caller drops the events already
-- applied and re-plans. Otherwise all writes and the new offsets are applied together.
local p = cjson.decode(ARGV[1])
local offsets_key, meta_key = KEYS[1], KEYS[2]

for _, g in ipairs(p.g) do
  local stored = redis.call('HGET', offsets_key, g[1])
  if stored and tonumber(g[2]) <= tonumber(stored) then
    return {'conflict', g[1], stored}
  end
end
local t0 = redis.call('HGET', meta_key, 't0')
if not t0 then
  redis.call('HSET', meta_key, 't0', p.t0)
elseif t0 ~= p.t0 then
  return {'conflict', 't0', t0}
end

-- keep the top `keep` members of a zset once it holds more than `over` (default: keep);
-- over > keep leaves slack, so trims are rare (session index)
local function trim_top(key, keep, over)
  if keep > 0 and redis.call('ZCARD', key) > (over or keep) then
    redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  end
end

-- Redis' zset-max-listpack-entries (default): a zset that ever holds more members is
-- converted to a skiplist (~4x the bytes) and stays one after a trim
local LISTPACK_MAX = 128

-- A member longer than zset-max-listpack-value (default 64 bytes): adding it turns a listpack
-- zset into a skiplist
local LONG_MEMBER = string.rep('~', 256)
-- rows given at least this many increments at once are applied as a skiplist (see below);
-- 0 = never
local HOT = tonumber(p.hot) or 0

-- ZADD key [flag] of (member, value) pairs: variadic, in chunks (Lua's unpack limit)
local function zadd_pairs(key, pairs_, flag)
  for start = 1, #pairs_, 2000 do
    local args = {key}
    if flag then args[2] = flag end
    for i = start, math.min(start + 1999, #pairs_), 2 do
      args[#args + 1] = pairs_[i + 1]
      args[#args + 1] = pairs_[i]
    end
    redis.call('ZADD', unpack(args))
  end
end

-- Applies (member, value, ...) to a zset, ZINCRBY or ZADD GT (gt), and trims it as trim_top
-- does (top `keep` once over `over`) after each new member. A row bounded within the listpack
-- limit never passes `over` on the way: new members come in best first, each either taking
-- the place of what the trim would drop or dropped itself. With over = keep that is exactly
-- "add everything, keep the top keep".
local function add_bounded(key, pairs_, keep, over, gt)
  over = over or keep
  local n = #pairs_ / 2
  local function put(member, value)
    if gt then
      redis.call('ZADD', key, 'GT', value, member)
    else
      redis.call('ZINCRBY', key, value, member)
    end
  end
  local function put_all()
    if gt then
      zadd_pairs(key, pairs_, 'GT')
    else
      for i = 1, #pairs_, 2 do put(pairs_[i], pairs_[i + 1]) end
    end
  end
  if keep <= 0 or over > LISTPACK_MAX then
    put_all()
    trim_top(key, keep, over)
    return
  end
  -- A hot row with over = keep: every ZINCRBY on a listpack re-parses the row's scores to
  -- find the new position (O(row) strtod per increment); on a skiplist it is O(log row). So
  -- a row given at least HOT increments by one batch is turned into a skiplist (and stays
  -- one: ~4x the bytes of a full listpack row, for the few rows at the head of the
  -- popularity curve; still at most `keep` members), then everything is added and the top
  -- `keep` kept, which is what the listpack path below does one member at a time when
  -- over = keep: the same members and scores.
  if not gt and HOT > 0 and n >= HOT and over == keep then
    redis.call('ZADD', key, '-inf', LONG_MEMBER)
    redis.call('ZREM', key, LONG_MEMBER)
    put_all()
    if redis.call('ZCARD', key) > keep then
      redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
    end
    return
  end
  local card = redis.call('ZCARD', key)
  if card + n <= over then -- cannot pass the bound: no trim
    put_all()
    return
  end
  -- which members the row holds already: one ZMSCORE per chunk
  local fresh = {}
  for start = 1, #pairs_, 2000 do
    local members = {}
    for i = start, math.min(start + 1999, #pairs_), 2 do members[#members + 1] = pairs_[i] end
    local held = redis.call('ZMSCORE', key, unpack(members))
    for k, score in ipairs(held) do
      local i = start + 2 * (k - 1)
      if score then
        put(pairs_[i], pairs_[i + 1])
      else
        fresh[#fresh + 1] = {pairs_[i], tonumber(pairs_[i + 1])}
      end
    end
  end
  if card > over then -- (a row written with other bounds before)
    redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
    card = keep
  end
  -- Redis' order: by score, equal scores by member
  table.sort(fresh, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] > b[1]) end)
  local drop = over - keep -- adding one member to a full row trims drop + 1 of the union
  for _, f in ipairs(fresh) do
    if card < over then
      put(f[1], f[2])
      card = card + 1
    else
      local edge = redis.call('ZRANGE', key, drop, drop, 'WITHSCORES')
      local edge_score = tonumber(edge[2])
      if f[2] > edge_score or (f[2] == edge_score and f[1] > edge[1]) then
        redis.call('ZREMRANGEBYRANK', key, 0, drop)
        put(f[1], f[2])
        card = card - drop
      elseif drop > 0 then
        redis.call('ZREMRANGEBYRANK', key, 0, drop - 1)
        card = card - drop
      else
        -- the rest come lower still, and the row's lowest member only rises: none gets in
        break
      end
    end
  end
end

-- zset increments (co-visitation, popularity), then keep the top members: the plan asks for
-- more than is served (co-visitation K + slack, popularity N), so the top served members
-- do not depend on the order batches of different partitions arrive in
for _, z in ipairs(p.z) do
  add_bounded(z[1], z[2], z[3])
end

-- zset absolute scores (seen sets: item -> last ts), keep the newest cap members
for _, z in ipairs(p.zs) do
  local key, pairs_ = z[1], z[2]
  zadd_pairs(key, pairs_)
  trim_top(key, z[3])
end

-- session index (user -> last event ts on the item): ZADD GT keeps each user's newest ts
-- whatever the order of arrival; trimmed to the newest snk users once sno is passed
for _, z in ipairs(p.sn) do
  add_bounded(z[1], z[2], p.snk, p.sno, true)
end

-- hash float increments (affinity), keep the largest cap fields
for _, h in ipairs(p.hf) do
  local key, pairs_, cap = h[1], h[2], h[3]
  for i = 1, #pairs_, 2 do
    redis.call('HINCRBYFLOAT', key, pairs_[i], pairs_[i + 1])
  end
  if cap > 0 and redis.call('HLEN', key) > cap then
    local all = redis.call('HGETALL', key)
    local rows = {}
    for i = 1, #all, 2 do rows[#rows + 1] = {all[i], tonumber(all[i + 1])} end
    table.sort(rows, function(a, b) return a[2] > b[2] end)
    for i = cap + 1, #rows do redis.call('HDEL', key, rows[i][1]) end
  end
end

-- capped lists (recent items, newest first)
for _, l in ipairs(p.lp) do
  redis.call('LPUSH', l[1], unpack(l[2]))
  redis.call('LTRIM', l[1], 0, l[3] - 1)
end

for _, h in ipairs(p.hs) do
  redis.call('HSET', h[1], unpack(h[2]))
end

-- popularity segments, LRU-bounded: an evicted segment takes its popularity list with it
if p.seg then
  local s = p.seg
  for i = 1, #s.items, 2 do
    redis.call('ZADD', s.key, s.items[i + 1], s.items[i])
  end
  local excess = redis.call('ZCARD', s.key) - s.max
  if excess > 0 then
    local old = redis.call('ZRANGE', s.key, 0, excess - 1)
    for _, seg in ipairs(old) do redis.call('DEL', s.pop_prefix .. seg) end
    redis.call('ZREMRANGEBYRANK', s.key, 0, excess - 1)
  end
end

-- catalog: categories and availability, last change wins; bump the catalog version
if p.cat then
  local c = p.cat
  local newest_new = nil
  for _, it in ipairs(c.items) do
    -- an item the catalog has never described joins the new-item pool at its catalog time
    if c.new and it[4] and redis.call('HEXISTS', c.key, it[1]) == 0
        and redis.call('SISMEMBER', c.na, it[1]) == 0 then
      redis.call('ZADD', c.new, 'NX', it[4], it[1])
      if newest_new == nil or it[4] > newest_new then newest_new = it[4] end
    end
    if it[2] == '' then
      redis.call('HDEL', c.key, it[1])
    else
      redis.call('HSET', c.key, it[1], it[2])
    end
    if it[3] == 1 then
      redis.call('SREM', c.na, it[1])
    else
      redis.call('SADD', c.na, it[1])
    end
  end
  if c.new and newest_new then
    redis.call('ZREMRANGEBYSCORE', c.new, '-inf', '(' .. (newest_new - c.new_age))
    trim_top(c.new, c.new_max)
  end
  redis.call('INCR', c.ver)
end

-- exposure <-> outcome join
local joined, pending = 0, 0
if p.x then
  local x = p.x
  local function count_outcome(xkey, item, etype)
    local rank = redis.call('HGET', xkey, item)
    if not rank then return false end
    local sv = redis.call('HGET', xkey, '_sv')
    if etype == 'click' then
      redis.call('HINCRBY', x.sv, sv .. '|clk', 1)
      redis.call('HINCRBY', x.sv, sv .. '|pos', rank)
      redis.call('ZINCRBY', x.clk, 1, item)
    elseif etype == 'purchase' then
      redis.call('HINCRBY', x.sv, sv .. '|conv', 1)
    end
    redis.call('HINCRBY', x.sv, 'join|ok', 1)
    joined = joined + 1
    return true
  end
  for _, e in ipairs(x.xp) do
    local xkey, pkey, sv, items = e[1], e[2], e[3], e[4]
    local args = {'_sv', sv}
    for i = 1, #items, 2 do
      args[#args + 1] = items[i]
      args[#args + 1] = items[i + 1]
      redis.call('ZINCRBY', x.imp, 1, items[i])
    end
    redis.call('HSET', xkey, unpack(args))
    redis.call('EXPIRE', xkey, x.ttl)
    redis.call('HINCRBY', x.sv, sv .. '|imp', #items / 2)
    redis.call('HINCRBY', x.sv, sv .. '|req', 1)
    local early = redis.call('LRANGE', pkey, 0, -1)
    for _, o in ipairs(early) do
      local sep = string.find(o, '|', 1, true)
      count_outcome(xkey, string.sub(o, 1, sep - 1), string.sub(o, sep + 1))
    end
    if #early > 0 then redis.call('DEL', pkey) end
  end
  for _, j in ipairs(x.jo) do
    local xkey, pkey, item, etype = j[1], j[2], j[3], j[4]
    redis.call('HINCRBY', x.sv, 'join|attempt', 1)
    if redis.call('EXISTS', xkey) == 1 then
      if not count_outcome(xkey, item, etype) then
        redis.call('HINCRBY', x.sv, 'join|item_miss', 1)
      end
    else
      redis.call('RPUSH', pkey, item .. '|' .. etype)
      redis.call('EXPIRE', pkey, x.ttl)
      pending = pending + 1
    end
  end
  trim_top(x.imp, x.cap)
  trim_top(x.clk, x.cap)
end

for _, e in ipairs(p.ex) do
  redis.call('EXPIRE', e[1], e[2])
end

for _, g in ipairs(p.g) do
  redis.call('HSET', offsets_key, g[1], g[3])
end
redis.call('HSET', meta_key, 'last_write', p.now, 'newest_event', p.newest)
return {'ok', tostring(joined), tostring(pending)}
