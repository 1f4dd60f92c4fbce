"""One module per capability; each compiles (fabric/policy, inventory) -> flows for its tables."""
