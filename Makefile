# The two set-up commands of the README. Both work on a fresh Debian 12 machine (as root, they install the
# PostgreSQL packages; otherwise they say which to install).
.PHONY: demo test lint clean

demo:  ## install, start a throwaway PostgreSQL, load the demo, run each of pgops' jobs on it
	scripts/bootstrap
	.venv/bin/pgops demo

test:  ## install what the tests need, then ruff and the whole test suite against a real PostgreSQL
	scripts/bootstrap --dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest

clean:
	-.venv/bin/pgops sandbox stop --dir .pgops/sandbox
	-.venv/bin/pgops sandbox stop --dir .pgops/test-sandbox
	rm -rf .pgops
