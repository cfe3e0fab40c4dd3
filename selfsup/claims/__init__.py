"""`selfsup claims`: the field's folklore as experiments, with verdicts (docs/claims.md)."""
from selfsup.claims.catalog import catalog, claims_by_name
from selfsup.claims.experiment import Arm, Claim
from selfsup.claims.harness import run_claims

__all__ = ["Arm", "Claim", "catalog", "claims_by_name", "run_claims"]
