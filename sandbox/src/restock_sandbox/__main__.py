"""``python -m restock_sandbox``: the sandbox peers (Shopify store, SMTP inbox) on their ports."""

from restock_sandbox import app

if __name__ == "__main__":
    app.main()
