"""The request metadata keys a user's client and the gateway agree on (cl_gw.proto's comment)."""
USER = "x-strife-user"          # must equal the CN of the client certificate
PASSWORD = "x-strife-password"  # travels only here, which no log reads
# Ask with this key (any value) and a payment's answer carries its stage timings back in the
# trailing metadata under the same key: how `strife bench` splits one payment's latency.
STAGES = "x-strife-stages"
