-- Argo CD health check for modeldeploy.io/ModelDeployment.
--
-- Reads what the operator writes: status.observedGeneration, status.phase and the
-- kstatus-style conditions Ready, Progressing, Degraded and Killed.
--   Suspended    kill switch engaged (phase Killed, or condition Killed=True), or a rollout
--                held: spec.rollout.paused, or waiting for approval (phase Paused)
--   Degraded     condition Degraded=True: a canary rolled back (the spec's revision is not
--                what serves), stable drifting or failing its analysis, too few warm pods,
--                objects that cannot be applied
--   Progressing  no status yet, a spec generation not yet observed, or a rollout under way
--                (phases Pending, Progressing, Promoting; Ready not True)
--   Healthy      phase Stable with Ready=True
-- Argo CD runs this with obj = the live object; only base Lua is used (no libraries).
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modeldeploy operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = phase
end
local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")

if phase == "Killed" or is_true(condition(status, "Killed")) then
  hs.status = "Suspended"
  if phase ~= "Killed" then
    message = "kill switch engaged: " .. say(condition(status, "Killed"), message)
  end
  hs.message = message
  return hs
end

if is_true(degraded) then
  hs.status = "Degraded"
  hs.message = degraded.reason .. ": " .. say(degraded, message)
  return hs
end

if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message
  return hs
end

if phase == "Stable" and is_true(ready) then
  hs.status = "Healthy"
  hs.message = message
  return hs
end

if phase == "RolledBack" or phase == "Degraded" then
  -- Should come with Degraded=True; say so even if the condition is missing.
  hs.status = "Degraded"
  hs.message = message
  return hs
end

hs.status = "Progressing"
hs.message = message
return hs
