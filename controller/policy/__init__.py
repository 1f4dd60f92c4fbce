"""YAML → frozen, validated model (fabric + tenants).  Errors carry FILE:LINE:COL."""
