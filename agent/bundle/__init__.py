"""The Iggy data bundle: iggy-data.zip, streamed inside the snapshot archive."""
