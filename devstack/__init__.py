"""The local stack (``trace up | down | status``): embedded Postgres, tansu, anvil, SeaweedFS (S3),
an object-store directory and Trace's own services under a supervisor, all under ``Settings.home``."""
