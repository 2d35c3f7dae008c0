"""bulkmail engine: job model, queue, routing, DNS, SMTP and outcomes (no process management)."""
