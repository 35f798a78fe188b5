"""The audit trail: CloudTrail-shaped events for every call, recorded durably before any response."""
