"""`strife bench`: payments per second and latency, beside a raw gRPC echo on the same machine."""
