-- Argo CD health check for autocrane.io/AppRollout (docs/app-rollouts.md, "GitOps and removal").
-- In argocd-cm:  resource.customizations.health.autocrane.io_AppRollout: |  <this file>
hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the AutoCrane controller"
  return hs
end
local phase = status.phase
local message = status.message or ""
if phase == "Healthy" then
  hs.status = "Healthy"
elseif phase == "Progressing" or phase == "Baking" then
  hs.status = "Progressing"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "Stuck" then
  -- RolledBack: Git's template was rejected, the pods run the last known good one;
  -- Stuck: the old version fails too, held without rollback. Both need a person.
  hs.status = "Degraded"
else
  hs.status = "Unknown"
end
hs.message = phase .. (message ~= "" and (": " .. message) or "")
return hs
