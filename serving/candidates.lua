-- Personal candidates of one request, aggregated next to the data (read only).
-- Called by serving/state_reader.py (StateReader.read_candidates); the reference
-- implementation is serving/ranker.py `aggregate` and the two must agree to the last bit.
--
-- KEYS[j] = covis zset of anchor j (anchors in the ranker's order).
-- ARGV[1] = n (neighbours read per anchor), ARGV[2] = '1' for row normalisation,
-- ARGV[3] = '1' to let an anchor's self edge score it; then per anchor j:
-- ARGV[2 + 2j] = its item id, ARGV[3 + 2j] = its weight (a round-trip float repr).
--
-- For every neighbour b of anchor a with 0 < covis(a,b) < inf (and b ~= a unless self edges
-- are allowed): score(b) += covis(a,b) * (w_a / N_a), anchors added in order, where N_a is
-- the correctly rounded sum of those covis(a,.) (CPython's math.fsum, ported below) or 1.
-- Anchors whose N_a is not positive are skipped. Per candidate, the two anchors with the
-- largest contribution (b ~= a, ties: the earlier anchor) name the "co-viewed with" reason.
--
-- Reply: {items, scores, first, second}: parallel arrays; scores as '%.17g' strings (exact
-- doubles), first / second as 1-based anchor positions (0 = none).
local n = tonumber(ARGV[1])
local row = ARGV[2] == '1'
local allow_self = ARGV[3] == '1'
local inf = math.huge

-- CPython's math_fsum for finite values: exact partial sums, then one correct rounding.
local function fsum(values, count)
  local p, np = {}, 0
  for k = 1, count do
    local x = values[k]
    local i = 0
    for j = 1, np do
      local y = p[j]
      if math.abs(x) < math.abs(y) then x, y = y, x end
      local hi = x + y
      local lo = y - (hi - x)
      if lo ~= 0.0 then
        i = i + 1
        p[i] = lo
      end
      x = hi
    end
    np = i
    if x ~= 0.0 then
      np = np + 1
      p[np] = x
    end
  end
  local hi = 0.0
  if np > 0 then
    hi = p[np]
    np = np - 1
    local lo = 0.0
    while np > 0 do
      local x = hi
      local y = p[np]
      np = np - 1
      hi = x + y
      lo = y - (hi - x)
      if lo ~= 0.0 then break end
    end
    if np > 0 and ((lo < 0.0 and p[np] < 0.0) or (lo > 0.0 and p[np] > 0.0)) then
      local y = lo * 2.0
      local x = hi + y
      if y == x - hi then hi = x end
    end
  end
  return hi
end

local items, scores, first, second, best, runner = {}, {}, {}, {}, {}, {}
local count = 0
for j = 1, #KEYS do
  local aid = ARGV[2 + 2 * j]
  local weight = tonumber(ARGV[3 + 2 * j])
  local raw = redis.call('ZREVRANGE', KEYS[j], 0, n - 1, 'WITHSCORES')
  local members, values, m = {}, {}, 0
  for i = 1, #raw, 2 do
    local member, c = raw[i], tonumber(raw[i + 1])
    if c > 0.0 and c < inf and (allow_self or member ~= aid) then
      m = m + 1
      members[m] = member
      values[m] = c
    end
  end
  if m > 0 then
    local norm = 1.0
    if row then norm = fsum(values, m) end
    if norm > 0.0 then
      local factor = weight / norm
      for i = 1, m do
        local b = members[i]
        local x = values[i] * factor
        local s = scores[b]
        if s == nil then
          count = count + 1
          items[count] = b
          scores[b] = x
        else
          scores[b] = s + x
        end
        if b ~= aid then
          local top = best[b]
          if top == nil or x > top then
            second[b], runner[b] = first[b], top
            first[b], best[b] = j, x
          elseif runner[b] == nil or x > runner[b] then
            second[b], runner[b] = j, x
          end
        end
      end
    end
  end
end

local out_scores, out_first, out_second = {}, {}, {}
for i = 1, count do
  local b = items[i]
  out_scores[i] = string.format('%.17g', scores[b])
  out_first[i] = first[b] or 0
  out_second[i] = second[b] or 0
end
return {items, out_scores, out_first, out_second}
