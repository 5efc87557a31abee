"""The sandbox Shopify store: products, inventory levels, signed webhooks and App Proxy signing."""
