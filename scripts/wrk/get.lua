-- wrk: GET a uniformly random key of the 100,000 that dynamo-bench --load wrote
-- (user000000000000 ... user000000099999).
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/kv/user%012d", math.random(0, 99999)))
end
