"""Twilio's webhooks: inbound SMS (STOP / START / YES keywords) and message status callbacks."""
