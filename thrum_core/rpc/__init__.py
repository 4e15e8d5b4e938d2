"""JSON-RPC 2.0: method specs, request processing and framing (SPEC §8)."""
