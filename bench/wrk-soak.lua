-- wrk hook for bench/soak.py: each request goes to the next of the service paths given after `--`
-- (in turn, over all of a wrk thread's connections), and the run ends
-- with wrk-report.lua's BENCH_RESULT line.
--   wrk ... -s bench/wrk-soak.lua http://127.0.0.1:PORT -- /svc-0/ /svc-1/ ...
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk-report.lua")

local paths = {}
local next_i = 1

init = function(args)
  for _, p in ipairs(args) do
    paths[#paths + 1] = p
  end
  if #paths == 0 then
    paths[1] = "/"
  end
end

request = function()
  local p = paths[next_i]
  next_i = next_i % #paths + 1
  return wrk.format("GET", p)
end
