"""Command-line entry points: dvsctl (client) and opendvs-controller (daemon launcher)."""
