"""WhatsApp Session Manager: shared code of the webhook, worker and notifier functions."""

__version__ = "0.1.0"
