# Shortcuts; the README's two commands (scripts/explain, scripts/test) need no make.
.PHONY: test bench bench-full

test:
	scripts/test

# Every script under bench/ at quick sizes, one table of measured ratios (needs: pip install -e '.[bench]').
bench:
	scripts/setup bench
	.venv/bin/python bench/run_all.py

bench-full:
	scripts/setup bench
	.venv/bin/python bench/run_all.py --full
