-- wrk script for scripts/soak.sh: replays the pre-generated raw requests (requests.bin from
-- `soak gen`) in a cycle, each thread from its own offset, and counts responses by status
-- class, by status code, and those whose status differs from the request's expected one
-- (matched through the x-request-id Envoy echoes back).
--
--   wrk ... -s soak/soak.lua http://127.0.0.1:PORT -- requests.bin result.json

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local reqs, n, pos
local expected = {}

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local i = 1
  while i <= #data do
    local nl = data:find("\n", i, true)
    local len, id, status = data:sub(i, nl - 1):match("^(%d+) (%d+) (%d+)$")
    len = tonumber(len)
    reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
    expected["soak-" .. id] = tonumber(status)
    i = nl + len + 1
  end
  n = #reqs
  pos = ((tid or 1) * 7919) % n
  c2, c3, c4, c5, cother, mismatched, unidentified = 0, 0, 0, 0, 0, 0, 0
  codes = {}
  mismatch_examples = ""
end

function request()
  pos = pos % n + 1
  return reqs[pos]
end

function response(status, headers, body)
  local class = math.floor(status / 100)
  if class == 2 then c2 = c2 + 1
  elseif class == 3 then c3 = c3 + 1
  elseif class == 4 then c4 = c4 + 1
  elseif class == 5 then c5 = c5 + 1
  else cother = cother + 1 end
  local k = tostring(status)
  codes[k] = (codes[k] or 0) + 1
  local rid = headers["x-request-id"]
  local want = rid and expected[rid]
  if not want then
    unidentified = unidentified + 1
  elseif want ~= status then
    mismatched = mismatched + 1
    if #mismatch_examples < 400 then
      mismatch_examples = mismatch_examples .. rid .. " got " .. k .. " want " .. want .. "; "
    end
  end
end

function done(summary, latency, requests)
  local t = { c2 = 0, c3 = 0, c4 = 0, c5 = 0, cother = 0, mismatched = 0, unidentified = 0 }
  local all_codes = {}
  local examples = ""
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
    local cs = thread:get("codes") or {}
    for code, count in pairs(cs) do
      all_codes[code] = (all_codes[code] or 0) + count
    end
    examples = examples .. (thread:get("mismatch_examples") or "")
  end
  local parts = {}
  for code, count in pairs(all_codes) do
    parts[#parts + 1] = string.format('"%s":%d', code, count)
  end
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"status_2xx":%d,"status_3xx":%d,"status_4xx":%d,' ..
    '"status_5xx":%d,"status_other":%d,"mismatched":%d,"unidentified":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d,"codes":{%s},"mismatch_examples":"%s"}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    t.c2, t.c3, t.c4, t.c5, t.cother, t.mismatched, t.unidentified,
    latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ","), examples:gsub('"', "'"))
  local path = os.getenv("SOAK_WRK_RESULT")
  local f = assert(io.open(path, "w"))
  f:write(out)
  f:close()
end
