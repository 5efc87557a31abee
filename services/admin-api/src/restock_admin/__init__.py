"""The admin-api: the storefront API behind the Shopify App Proxy, shop registration, later the admin API."""
