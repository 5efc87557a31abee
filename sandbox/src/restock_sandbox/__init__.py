"""Local stand-ins speaking the real protocols (Shopify store and Admin API, Twilio, SMTP inbox); never
imported by a service."""
