"""Alerts: rules evaluated by the job leader over new audit events (and process health), stored,
recorded as ``AlertRaised`` audit events and sent to the server log, a webhook and Slack."""
