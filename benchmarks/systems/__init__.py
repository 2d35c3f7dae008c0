"""One module per system measured: the SMTP ceiling, the Postfix relay, bulkmail."""
