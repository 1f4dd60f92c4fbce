"""Makes ryu 4.34 importable on Python 3.11 with eventlet 0.33.3 (see
shared/reference/frameworks.md): ryu.app.wsgi imports eventlet.wsgi.ALREADY_HANDLED, which
eventlet dropped in 0.30.3 (since then eventlet marks a request handled itself and a WSGI app
returns []).  Loaded at interpreter start-up by opendvs-ryu.pth in the ryu virtualenv only,
before anything can import ryu."""
try:
    import eventlet.wsgi as _wsgi
except Exception:             # noqa: BLE001 - never break the interpreter's start-up
    pass
else:
    if not hasattr(_wsgi, 'ALREADY_HANDLED'):
        _wsgi.ALREADY_HANDLED = []
