"""Local stand-ins speaking the real protocols (Shopify store, SMTP inbox); never imported by a service."""
