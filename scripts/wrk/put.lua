-- wrk: PUT 100 B to a new key each time (an insert, so no siblings pile up):
-- /kv/wrk-THREAD-N.
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local n = 0
local body = string.rep("x", 100)
local headers = { ["Content-Type"] = "application/octet-stream" }
request = function()
  n = n + 1
  return wrk.format("PUT", "/kv/wrk-" .. id .. "-" .. n, headers, body)
end
