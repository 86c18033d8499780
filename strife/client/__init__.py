"""A user's side: talking to the gateway, the durable outbox, and the one loop that delivers it."""
