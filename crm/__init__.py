"""CRM domain: lead and contact upserts."""
