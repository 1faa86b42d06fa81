.PHONY: run test lint typecheck bench clean

run:            ## install and run web + worker with embedded defaults
	./run.sh

test:           ## install and run the whole test suite
	./test.sh

lint:           ## ruff over the code and tests
	.venv/bin/python -m ruff check app actors facade tests tasks.py wsgi.py

typecheck:      ## mypy over app, actors and facade
	.venv/bin/python -m mypy app actors facade

clean:
	rm -rf .venv .run build dist *.egg-info
