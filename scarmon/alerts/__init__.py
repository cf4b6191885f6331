"""Alerts: rules and the confirmation state machine (`rules`, pure), where alerts live in the store (`history`:
state, history, outbox), and delivery by e-mail and webhook (`notify`)."""
