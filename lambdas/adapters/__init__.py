"""Small AWS adapters; boto3 clients are created lazily (never at import) or injected."""
