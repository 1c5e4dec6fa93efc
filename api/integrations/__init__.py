"""Third-party webhooks: verify the provider's signature, map its event to a Déclic event.

- :mod:`api.integrations.shopify`, :mod:`api.integrations.stripe`, :mod:`api.integrations.generic`
  — each provider's signature scheme and where its event type and delivery id are found (pure);
- :mod:`api.integrations.mapping` — JMESPath mappings from an external payload to an envelope (pure);
- :mod:`api.integrations.config` — ``integrations.yaml`` loaded and checked at start-up;
- :mod:`api.integrations.routes` — ``POST /v1/integrations/{name}`` tying it together.
"""
