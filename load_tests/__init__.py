"""Load tests: scenarios, open- and closed-loop generators, reports."""
