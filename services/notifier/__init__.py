"""Notifier: tells people what happens to releases (`release.status`, `release.alerts`) over Slack, Microsoft
Teams, signed webhooks and email, each (event, route) delivered once, retried with backoff off the consumer's
path, and dead-lettered with the reason after its last attempt."""
