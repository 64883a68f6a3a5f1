"""The local stack (``trace up | down | status``): embedded Postgres, tansu, anvil, an object-store
directory and Trace's own services under a supervisor, all under ``Settings.home``."""
