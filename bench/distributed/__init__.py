"""The locust engine: the same scenarios on Locust's master/worker machinery.

``benchbox sweep FILE --engine locust --workers N`` keeps the normal sweep (managed servers,
sinks, result.json, quality, gates, report) in the benchbox process and hands each level to a
Locust master (a child process) that drives N Locust workers (child processes, or
``benchbox locust-worker --master HOST:PORT`` on other hosts). Workers stream finished records
back in batches over Locust's messaging; the benchbox process feeds them to the same sinks.

Layout: ``protocol`` (pure: level splits, item cursors, clocks), ``gevent_client`` (the worker's
streaming HTTP client), ``worker`` and ``master`` (gevent processes, import locust), ``engine``
(the asyncio side: processes, the level runner, the sweep). Only ``worker`` and ``master``
import locust, which monkeypatches the standard library with gevent on import; nothing in the
asyncio engine's import graph does.
"""
