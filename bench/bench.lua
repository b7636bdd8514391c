-- wrk script for scripts/bench.sh: every request carries the next token of a file (one per
-- line), cycling, so a file of 20,000 distinct tokens defeats every cache; "none" sends no
-- Authorization. The summary goes as one JSON line to the file named by BENCH_RESULT.
--
--   BENCH_RESULT=out.json wrk -t1 -c32 -d10s -s bench/bench.lua URL -- TOKENS_FILE|none

local headers_list, n, pos

function init(args)
  headers_list = {}
  if args[1] and args[1] ~= "none" then
    for line in io.lines(args[1]) do
      if #line > 0 then
        headers_list[#headers_list + 1] = { ["Authorization"] = "Bearer " .. line }
      end
    end
  end
  n = #headers_list
  pos = 0
end

function request()
  if n == 0 then
    return wrk.format(nil, nil, {})
  end
  pos = pos % n + 1
  return wrk.format(nil, nil, headers_list[pos])
end

function done(summary, latency, requests)
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max)
  local f = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
  f:write(out)
  f:close()
end
