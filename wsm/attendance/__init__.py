"""Serving people: attendant slots, the fair queue, the worker and the notifier functions' logic.
Imports every floor below (core, store, waha, conversation, delivery)."""
