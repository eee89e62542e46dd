"""The serverless platform on one machine: event router and its trigger table, the supervised ``make local``,
child processes, an embedded redis-server."""
