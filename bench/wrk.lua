-- wrk driver: one request per line of an input file, each line used once.
--   wrk ... -s bench/wrk.lua URL -- PATH MODE FILE
-- MODE "bearer": GET PATH with "Authorization: Bearer <line>" (lines are access tokens, reused in turn).
-- MODE "json":   POST PATH with <line> as the JSON body (refresh tokens, fresh phone numbers, codes:
--                each usable once; when the file runs out the driver starts over and counts it).
-- MODE "get":    GET PATH, no file.
-- At the end it prints one JSON line with the counts and latency percentiles (microseconds).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  path, mode, file = args[1], args[2], args[3]
  lines, index, wrapped = {}, 0, 0
  if file ~= nil then
    local nthreads = tonumber(args[4] or "1")
    local n = 0
    for line in io.lines(file) do
      if n % nthreads == id then
        lines[#lines + 1] = line
      end
      n = n + 1
    end
  end
end

function request()
  if mode == "get" then
    return wrk.format("GET", path)
  end
  index = index + 1
  if index > #lines then
    index, wrapped = 1, wrapped + 1
  end
  if mode == "bearer" then
    return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. lines[index] })
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, lines[index])
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, '
      .. '"max_us": %d, "non_2xx": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"timeouts": %d, "input_wraps": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.status, e.connect, e.read, e.write, e.timeout, wraps
  ))
end
