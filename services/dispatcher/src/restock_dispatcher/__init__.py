"""The dispatcher: freezes a restock's targets into notification jobs and publishes them in batches."""
