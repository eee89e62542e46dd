"""Shipping each function on its own: bundles, Cloud Run functions (gcloud), Lambda on LocalStack, Dockerfiles."""
