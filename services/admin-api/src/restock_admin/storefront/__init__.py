"""The storefront API behind the Shopify App Proxy: "Notify me" signups."""
