"""The datadeployer: fetches requested data versions, verifies them and swaps them in atomically."""
