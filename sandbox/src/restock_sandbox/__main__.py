"""``python -m restock_sandbox``: the sandbox peers (Shopify store and Admin API, Twilio, SMTP inbox)."""

from restock_sandbox import app

if __name__ == "__main__":
    app.main()
