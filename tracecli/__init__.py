"""The ``trace`` entry point: assembles every component's CLI (:mod:`tracecli.main`) and holds
the demo. Nothing imports this package but ``[project.scripts]`` and ``python -m tracecli``."""
