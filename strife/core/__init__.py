"""The core: small pieces every layer uses (money, durations, names, decisions, failpoints, the
words for a payment's outcome, errors, logging). It imports nothing of Strife outside itself."""
