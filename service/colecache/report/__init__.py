"""What a person looks at: plots and pages of a study's report (figures come from studies/prequential.py)."""
