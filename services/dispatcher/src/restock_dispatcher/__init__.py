"""The dispatcher: freezes a restock's targets into notification jobs and publishes them in batches, paced
in inventory-aware waves when the shop asks for them; fulfils subscriptions on orders; answers dry runs."""
