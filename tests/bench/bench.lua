-- wrk script for tests/bench/run.py (LuaJIT: wrk 4.x links it).
--
--   wrk -t<conns> -c<conns> ... -s bench.lua URL -- <depth> <stop_after>
--
-- depth > 1   every write carries <depth> pipelined GETs of the URL's path.
-- stop_after  > 0: each thread stops after that many responses (RSS runs)
--             and appends a line to $WRK_DONE_FILE (wrk itself runs on until
--             -d expires: run.py interrupts it once every thread is done).
--
-- Latency is measured here, per response, not taken from wrk's own
-- statistics: wrk records one sample per pipelined batch and then applies a
-- coordinated-omission correction that, with pipelining, pushes synthetic
-- samples below the minimum (percentile(99) then returns 0).  Run with one
-- connection per thread (-t N -c N) so that request() and response() of a
-- thread belong to the same connection: a response's latency is the time
-- since its batch was handed to wrk for writing (CLOCK_MONOTONIC, µs).
-- done() prints one line "WRKJSON {...}" with wrk's counters, its own
-- (corrected) percentiles as wrk_p50_us/wrk_p99_us, and the histogram of
-- the per-response latencies as {"<µs>": count, ...}.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } kg_timespec;
int clock_gettime(int clk_id, kg_timespec *tp);
]]
local ts = ffi.new("kg_timespec")
local C = ffi.C

local function now_us()
   C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local depth = 1
local stop_after = 0
local batch = nil
local sent_at = 0
count = 0
hist = {}

setup = function(thread)
   table.insert(threads, thread)
end

init = function(args)
   depth = tonumber(args[1]) or 1
   stop_after = tonumber(args[2]) or 0
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, wrk.path)
   end
   batch = table.concat(r)
end

request = function()
   sent_at = now_us()
   return batch
end

response = function(status, headers, body)
   local us = math.floor(now_us() - sent_at)
   hist[us] = (hist[us] or 0) + 1
   count = count + 1
   if count == stop_after then
      local path = os.getenv("WRK_DONE_FILE")
      if path then
         local f = io.open(path, "a")
         f:write("done\n")
         f:close()
      end
      wrk.thread:stop()
   end
end

done = function(summary, latency, requests)
   local merged = {}
   local measured = 0
   for _, thread in ipairs(threads) do
      local h = thread:get("hist")
      for us, n in pairs(h) do
         merged[us] = (merged[us] or 0) + n
         measured = measured + n
      end
   end
   local parts = {}
   for us, n in pairs(merged) do
      table.insert(parts, string.format("\"%d\":%d", us, n))
   end
   local e = summary.errors
   io.write(string.format(
      "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"err_connect\":%d," ..
      "\"err_read\":%d,\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d," ..
      "\"wrk_p50_us\":%d,\"wrk_p99_us\":%d,\"measured\":%d,\"hist\":{%s}}\n",
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(99), measured,
      table.concat(parts, ",")))
end
