"""The serving stack from the driver's side, one module per job:

- `build`: `ernie layers build`, each layer's zipped and unzipped size and the total against Lambda's limit.
- `gateway`: `ernie serve --local`, the local API Gateway (payload 2.0 events in, the handler's answers out).
- `invoke`: `ernie invoke -s aws`, a request to the stack's `serving_url` (or any `--url`).
- `demo_check`: the handler run from the built, unpacked layers in a bare interpreter (`ernie demo`).
"""
