"""ernie's Pulumi program: what `pulumi up -s gcp|aws` builds. `__main__.py` is the entry point Pulumi runs."""
