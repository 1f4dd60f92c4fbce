"""REST API (JSON) for policy push and show: token auth, localhost by default."""
