"""WhatsApp Session Manager: the shared package every function bundles, one folder per area.

Areas stand on floors and import only from their own floor or below:

1. ``core``          settings, errors, clock, statuses, privacy (imports nothing of ours)
2. ``store``         Redis: key schema, Lua scripts, connection, group commit, wake-up events, a chat's lease
   ``waha``          the WAHA wire format: webhook events, REST client, signature
   ``metrics``       Prometheus: the counters every area records, Redis gauges, the ``/metrics`` endpoint
3. ``ingest``        the webhook's HTTP handling and storing an event
   ``conversation``  the flow file and the engine that follows it, history reading
   ``delivery``      the outbox sender and the dead-letter list
   ``schedule``      appointments: the schedule file, free slots, the booking scripts, the CalDAV push
   ``providers``     the WhatsApp APIs behind one seam: WAHA, the Cloud API, Evolution (webhooks, clients, window)
4. ``attendance``    slots, queue, the worker and the notifier
5. ``ops``           operators' command line, export/erase
   ``adapters``      other platforms' entry points (AWS Lambda)
   ``console``       the operators' web console (human attendance, live queues)
"""

__version__ = "0.1.0"
