"""The bottom floor: settings, errors, the clock, chat statuses, phone masking. Imports nothing else of ours."""
