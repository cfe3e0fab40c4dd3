"""`selfsup claims`: the field's folklore as experiments, with verdicts (docs/claims.md)."""

from selfsup.experiments.claims.catalog import catalog, claims_by_name
from selfsup.experiments.claims.experiment import Arm, Claim
from selfsup.experiments.claims.harness import run_claims

__all__ = ["Arm", "Claim", "catalog", "claims_by_name", "run_claims"]
