"""WhatsApp providers: WAHA, the official Cloud API and Evolution API behind one small seam (see base)."""
