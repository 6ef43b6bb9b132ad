"""supervisord-lite: an on-host process supervisor with honest readiness and
zero-downtime reloads."""

__version__ = "0.1.0"
