"""The client's durable outbox: a payment is written here, with its id, before anything is sent."""
