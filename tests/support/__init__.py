"""Helpers shared by the test suite, one module per area: ``actor`` (background calls,
gates, waits), ``asyncmap`` (the blocking adapter that lets the shared suite drive an
``AsyncActorMap``), ``bench`` (recording and deliberately broken maps), ``cacherace``
(values and threads for races on a Cache's hits), ``race`` (threads for the race
detector's tests), ``redis_server`` (a real Redis server on 127.0.0.1). ``tests/`` is on
``sys.path`` (the root ``conftest.py`` lives there), so a test
imports ``from support.bench import ...``."""
