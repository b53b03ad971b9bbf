"""The service: snapshot records, retention, one snapshot at a time, and the API over them."""
