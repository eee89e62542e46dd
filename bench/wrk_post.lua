-- wrk script: POST pre-generated signed WAHA webhook bodies, each at most once.
--
-- Usage: wrk -t2 -c32 -d10s -s bench/wrk_post.lua http://127.0.0.1:8080/ -- <bodies file> <threads>
-- The file has one body per line: "<HMAC-SHA512 hex>\t<JSON body>". Thread k posts lines k, k+T, k+2T...
-- When a thread runs out it starts again from its first body (those requests are duplicates);
-- done() reports that as bodies_reused, and prints one "WRK_JSON {...}" line with the figures.

local threads = {}
local bodies, hmacs = {}, {}
local next_body = 1
sent, reused = 0, 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local tab = line:find("\t", 1, true)
      hmacs[#hmacs + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    i = i + 1
  end
  assert(#bodies > 0, "no bodies for thread " .. tid .. " in " .. path)
end

local headers = { ["Content-Type"] = "application/json", ["X-Webhook-Hmac-Algorithm"] = "sha512" }

function request()
  local k = next_body
  if k > #bodies then
    k = (k - 1) % #bodies + 1
    reused = reused + 1
  end
  next_body = next_body + 1
  sent = sent + 1
  headers["X-Webhook-Hmac"] = hmacs[k]
  return wrk.format("POST", nil, headers, bodies[k])
end

function done(summary, latency, requests)
  local total_sent, total_reused = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_reused = total_reused + thread:get("reused")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"status_errors": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "sent": %d, "bodies_reused": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout, total_sent, total_reused))
end
