"""ernie's own bounds on a stack: infra/config.py refuses a configuration beyond them and policy/rules.py flags a
resource beyond them, so both read them from here."""

# A slice left running is the costliest mistake; a run longer than a day should checkpoint and resume.
MAX_TTL_MINUTES = 24 * 60
# API Gateway gives up on an integration after 30 s; a longer function timeout would only hide that.
SERVING_MAX_TIMEOUT_SECONDS = 30
# A benchmark endpoint, not a production fleet: unreserved, a function may take the account's whole concurrency.
SERVING_MAX_RESERVED_CONCURRENCY = 100
