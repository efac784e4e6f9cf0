"""Studies: observations, versions, and the surrogate fitted on them."""
