-- wrk script: PATCH /api/orders/{id}/status {"action":"confirm"} as the
-- restaurant's staff, each request on a different PLACED order, ids handed
-- out from FIRST upward, interleaved across wrk threads.
-- Env: TOKEN (staff JWT), FIRST (first order id), THREADS (wrk -t).
local next_id
local step

local thread_index = 0
function setup(thread)
  thread:set("index", thread_index)
  thread_index = thread_index + 1
end

function init(args)
  step = tonumber(os.getenv("THREADS") or "1")
  next_id = tonumber(os.getenv("FIRST")) + (index or 0)
end

function request()
  local id = next_id
  next_id = next_id + step
  local headers = {
    ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
    ["Content-Type"] = "application/json",
  }
  return wrk.format("PATCH", "/api/orders/" .. id .. "/status", headers, '{"action":"confirm"}')
end

function done(summary, latency, requests)
  io.write(string.format("requests %d, errors(non-2xx or socket) %d\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
