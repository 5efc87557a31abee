"""The sandbox SMTP server: an inbox tests can read, and failures they can inject."""
