.PHONY: run test lint typecheck bench bench-quick clean

run:            ## install and run web + worker with embedded defaults
	./run.sh

test:           ## install and run the whole test suite
	./test.sh

lint:           ## ruff over the code and tests
	.venv/bin/python -m ruff check app actors facade tests tasks.py wsgi.py

typecheck:      ## mypy over app, actors and facade
	.venv/bin/python -m mypy app actors facade

bench:          ## every benchmark, this project beside stock Dramatiq and Celery (bench/README.md)
	. ./scripts/venv.sh && ensure_venv "[bench]" && .venv/bin/python -m bench.compare $(BENCH_ARGS)

bench-quick:    ## a smoke run of the same (1 run, small sizes)
	. ./scripts/venv.sh && ensure_venv "[bench]" && .venv/bin/python -m bench.compare --quick $(BENCH_ARGS)

clean:
	rm -rf .venv .run build dist *.egg-info
