"""Live state: switches and ports, discovered links, learned MACs (later: OVSDB bindings)."""
