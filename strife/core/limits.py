"""Bounds on what a request may carry, shared by the servers that check them and the CLI."""
MAX_NAME = 64         # an account, payee or transaction id read from a request (names are shorter still)
MAX_FULL_NAME = 200   # a user's full name, at the gateway and at their bank
MAX_HISTORY = 1000    # payments one history answer holds at most
MAX_BATCH = 256       # legs or transaction ids one request to a bank carries at most
