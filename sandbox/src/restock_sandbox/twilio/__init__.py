"""The sandbox Twilio Messages API: real wire format, signed status callbacks and inbound webhooks,
failure injection per recipient, and a record of every accepted message (mounted under ``/twilio``)."""
