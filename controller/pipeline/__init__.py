"""Named tables, Flow values, the cookie scheme and the reconciler."""
