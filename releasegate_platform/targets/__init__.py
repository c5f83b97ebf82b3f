"""Deployment targets: the port every environment's target implements (`port.py`) and its adapters, `local`
(processes behind HAProxy) and `kubernetes` (Deployments, Services and a Gateway API HTTPRoute)."""
