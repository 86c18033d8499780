"""The metadata keys Strife's processes agree on: a user and the gateway (cl_gw.proto's comment), a node and its probe."""
USER = "x-strife-user"          # must equal the CN of the client certificate
PASSWORD = "x-strife-password"  # travels only here, which no log reads
# Ask with this key (any value) and a payment's answer carries its stage timings back in the
# trailing metadata under the same key: how `strife bench` splits one payment's latency.
STAGES = "x-strife-stages"
# A node that is NOT_SERVING says why in its health answer's trailing metadata under this key
# (strife/nodes/health.py); the supervisor's probe reads it for `strife status` (strife/launcher/health.py).
HEALTH_REASON = "strife-health-reason"
# The gateway answers UNAVAILABLE for a bank that did not answer it, naming that bank here, so that
# a client can tell "your bank is down" from "the gateway did not take your connection".
BANK_UNAVAILABLE = "strife-bank-unavailable"
