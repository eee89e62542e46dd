"""Everything outside the shipped package: the platform emulated, the WAHA simulator, deploy tooling."""
