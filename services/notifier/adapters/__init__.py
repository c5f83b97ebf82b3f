"""The notifier's adapters: the catalog's routes, secret files, HTTP channels (Slack, Teams, signed webhook),
SMTP, and its PostgreSQL delivery ledger."""
