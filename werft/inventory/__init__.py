"""The fleet inventory: schema, loading, validation."""
