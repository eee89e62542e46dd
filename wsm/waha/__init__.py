"""The WAHA wire format: webhook events parsed into ours, the REST client, the HMAC signature. Imports only
``wsm.core``."""
