"""Message providers; each turns its failures into ``delivery.ProviderError`` data."""
