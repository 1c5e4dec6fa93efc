"""The HTTP service: events, integrations, SES notifications, unsubscribe, health and metrics."""
