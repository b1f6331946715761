"""Email domain: Gmail sync job manager, Gmail API client, email sending."""
