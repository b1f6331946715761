"""What operators read and run: alerts, the audit log, dashboard queries, nightly maintenance.
May import: any other core package; nothing in core imports it."""
