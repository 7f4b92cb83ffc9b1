-- Argo CD health check for apps/Deployment that knows AutoCrane's staged rollouts (docs/app-rollouts.md).
-- In argocd-cm:  resource.customizations.health.apps_Deployment: |  <this file>
-- A Deployment in a group (label rollout.autocrane.io/group) that is paused is held by AutoCrane:
-- Suspended, with why (its AppRollout says more). Otherwise Argo CD's own rules, in short:
-- Progressing until the current template is fully rolled out, Degraded on ProgressDeadlineExceeded.
hs = {}
local labels = obj.metadata.labels or {}
local group = labels["rollout.autocrane.io/group"]
local spec = obj.spec or {}
local status = obj.status or {}
if spec.paused then
  hs.status = "Suspended"
  if group ~= nil then
    hs.message = "held by AutoCrane (group " .. group .. "): see `autocrane status` or AppRollout " .. group
  else
    hs.message = "Deployment is paused"
  end
  return hs
end
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded" then
    hs.status = "Degraded"
    hs.message = condition.message or "progress deadline exceeded"
    return hs
  end
end
local replicas = spec.replicas or 1
local generation = obj.metadata.generation or 0
if (status.observedGeneration or 0) < generation or (status.updatedReplicas or 0) < replicas
    or (status.availableReplicas or 0) < replicas or (status.replicas or 0) > (status.updatedReplicas or 0) then
  hs.status = "Progressing"
  hs.message = "rolling out: " .. (status.updatedReplicas or 0) .. "/" .. replicas .. " updated"
  return hs
end
hs.status = "Healthy"
return hs
