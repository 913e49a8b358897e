-- wrk script: POST /api/orders as one customer, each request with its own
-- Idempotency-Key (so every request creates an order, as real clients do).
-- Env: TOKEN (a customer's JWT).
local counter = 0

-- Each wrk thread has its own Lua state; give each a distinct key prefix
-- (math.random is seeded alike in every thread, so it would not do).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_tag", "t" .. threads .. "-" .. os.time())
end

function request()
  counter = counter + 1
  local headers = {
    ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = thread_tag .. "-" .. counter,
  }
  local item = 1 + (counter % 8)
  local body = '{"restaurantId":1,"items":[{"menuItemId":' .. item .. ',"quantity":2}],' ..
    '"deliveryAddress":{"street":"1100 Congress Ave","city":"Austin","state":"TX",' ..
    '"zip":"78701","lat":30.2747,"lon":-97.7404}}'
  return wrk.format("POST", "/api/orders", headers, body)
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("requests %d, errors(non-2xx or socket) %d\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
