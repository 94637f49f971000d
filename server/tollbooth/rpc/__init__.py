"""gRPC wiring: auth rules from the contract, interceptors, the server."""
