"""`ernie compare`: a benchmark matrix across clouds from one plan file, planned for time and cost before it
starts (plan.py, estimate.py), run cell by cell with destroy-always (runner.py), reported side by side (report.py)."""
