"""Secret change events: published on every change, streamed to subscribers and posted to webhooks."""
