"""The sender: claims notification jobs, re-checks consent, renders, sends, records each attempt."""
