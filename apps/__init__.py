"""One module per capability; each compiles (fabric/policy, inventory) -> flows for its tables.

Each is also an app ryu-manager (or opendvs-controller --apps) can name: controller/ofp.py
puts the app class into every module here when it is imported.  Under a framework (its
app manager already imported) it is imported here first, so `ryu-manager apps.topology`
finds the class even when controller.ofp is named after it, or not at all."""
import sys as _sys

if 'ryu.base.app_manager' in _sys.modules or 'os_ken.base.app_manager' in _sys.modules:
    import controller.ofp  # noqa: E402,F401  (binds the app classes; no framework import here)
