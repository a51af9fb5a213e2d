-- wrk script: GET /postback with a unique tracking token per request, so that
-- every request is a new conversion (no dedup short-cut).
-- Usage: API_KEY=... wrk -t1 -c50 -d10s -s load-tests/wrk/unique-postback.lua http://127.0.0.1:8080
local key = os.getenv("API_KEY") or "bench-key-0123456789"
local run = tostring(os.time())
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  n = 0
  prefix = "/postback?api_key=" .. key .. "&amount=12.34&tracking=wrk-" .. run .. "-" .. tid .. "-"
end

function request()
  n = n + 1
  return wrk.format("GET", prefix .. n)
end

-- Counts replies that are not 200 OK.
function response(status, headers, body)
  if status ~= 200 then
    bad = (bad or 0) + 1
  end
end
